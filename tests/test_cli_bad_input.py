"""Every flag of every family, fed bad values: one line on stderr, exit status 2, no
traceback, and nothing written or changed.

The command line checks everything before a model is built or data is loaded, so each
case runs in-process in milliseconds. To keep that promise honest, building a model or
loading data is made to fail loudly here: a bad value that slipped through would reach
them and turn into an "internal error" (exit 1), failing its case.
"""
import os

import pytest

import architectures
from minicnn import cli
from minicnn.cli import pieces

# the classifier families (efficientdet runs the detection command: tests/test_detection_train.py)
FAMILIES = tuple(f for f in architectures.FAMILIES if f != "efficientdet")

NOT_A_NUMBER = ["abc", "", "nan", "NaN", "inf", "-inf", "1e999"]
WHOLE = NOT_A_NUMBER + ["2.5", "1e3", "0x10"]
# (flag, bad values, the other arguments it needs to be used at all)
NUMERIC = [
    ("--epochs", WHOLE + ["0", "-1", "1000000000000"], ["--train", "mnist"]),
    ("--batch-size", WHOLE + ["0", "-8", "99999999"], ["--train", "mnist"]),
    ("--limit-train", WHOLE + ["0", "-1", "10000000000000"], ["--train", "mnist"]),
    ("--seed", WHOLE + ["-1", str(2 ** 32), "1" + "0" * 30], ["--train", "mnist"]),
    ("--input-size", WHOLE + ["0", "-32", "100000"], ["--train", "mnist"]),
    ("--measure", WHOLE + ["0", "-1", "1000000000"], ["--summary"]),
    ("--lr", NOT_A_NUMBER + ["0", "-0.1", "11", "1e9"], ["--train", "mnist"]),
    ("--momentum", NOT_A_NUMBER + ["-0.1", "1", "5", "1e9"], ["--train", "mnist"]),
    ("--weight-decay", NOT_A_NUMBER + ["-1e-4", "1", "1e9"], ["--train", "mnist"]),
    ("--label-smoothing", NOT_A_NUMBER + ["-0.1", "1", "1.5"], ["--train", "mnist"]),
    ("--mixup", NOT_A_NUMBER + ["0", "-1", "1e9"], ["--train", "mnist"]),
    ("--clip-grad", NOT_A_NUMBER + ["0", "-2"], ["--train", "mnist"]),
    ("--ema", NOT_A_NUMBER + ["0", "1", "1.5"], ["--train", "mnist"]),
    ("--bn-momentum", NOT_A_NUMBER + ["0", "-0.1", "2"], ["--train", "mnist"]),
    ("--progressive", WHOLE + ["0", "-1", "1000"], ["--train", "mnist"]),     # stage count 0
    # RandAugment: the magnitude out of its [0, 30], or not a pair
    ("--randaugment", ["2", "2,", ",9", "2,31", "2,-1", "-1,9", "2.5,9", "2,nan", "a,b",
                       "2,9,1"], ["--train", "mnist"]),
    ("--scale-jitter", ["48,32", "0,32", "32", "32,x", "32,1e9"], ["--train", "mnist"]),
    ("--progressive-size", ["300,128", "0,64"], ["--train", "mnist", "--progressive", "2"]),
]
WORDS = [
    ("--optimizer", ["lion", "SGD", ""], ["--train", "mnist"]),
    ("--augment", ["rotate", ""], ["--train", "mnist"]),
    ("--device", ["tpu", "cuda"], ["--train", "mnist"]),
    ("--variant", ["no_such_net", ""], ["--train", "mnist"]),
    ("--train", ["imagenet", "{file}", "{missing}/folder"], []),
    ("--schedule", ["zigzag", "step:", "step:0", "step:-1", "step:nan", "step:2:nan",
                    "step:1e400", "exponential:nan", "exponential:-1", "exponential:0",
                    "exponential:inf", "decay:0:0.97", "decay:2:-1", "multistep:3,1",
                    "multistep:a", "cosine:3", "warmup:-1+cosine", "warmup:nan+cosine",
                    "warmup:1+warmup:1", "warmup:2+zigzag"], ["--train", "mnist"]),
    ("--recipe", ["nonsense", "Paper", ""], ["--train", "mnist"]),
    ("--tta", ["5crop", ""], ["--train", "mnist"]),
    ("--freeze", ["sideways", "all-but-last-0", "all-but-last--1", "all-but-last-x"],
     ["--train", "mnist", "--finetune", "{junk}"]),
]
PATHS = [
    ("--save", ["{folder}", "{file}/model.npz", "{file}/deeper/model.npz"],
     ["--train", "mnist"]),
    ("--save", ["{taken}"], ["--train", "mnist"]),                  # another run's checkpoint
    ("--plot", ["{file}", "{file}/plots"], ["--train", "mnist"]),
    ("--data-dir", ["{file}", "{file}/data"], ["--train", "mnist"]),
    ("--resume", ["{missing}/run.npz", "{folder}", "{junk}", "{empty}"], ["--eval-only"]),
    ("--resume", ["{missing}/run.npz", "{folder}", "{junk}"], []),
    ("--finetune", ["{missing}/run.npz", "{folder}"], ["--train", "mnist"]),
    ("--predict", ["{missing}/digit.png", "{folder}"], ["--resume", "{junk}"]),
    ("--weights", ["{missing}/w.pth", "{folder}", "{junk}"], ["--summary"]),
    ("--weights", ["{missing}/w.pth", "{folder}"], ["--predict", "{file}"]),
    ("--export-onnx", ["{folder}", "{file}/model.onnx"], ["--resume", "{junk}"]),
]
# options that contradict each other or would be silently ignored
COMBINATIONS = [
    [],
    ["--eval-only"],
    ["--predict", "{file}"],
    ["--train", "mnist", "--sync-bn"],
    ["--summary", "--sync-bn"],
    ["--train", "mnist", "--measure", "4"],
    ["--train", "mnist", "--freeze", "backbone"],
    ["--resume", "{junk}", "--eval-only", "--predict", "{file}"],
    ["--resume", "{junk}", "--finetune", "{junk}"],
    ["--resume", "{junk}", "--eval-only", "--input-size", "32"],
    ["--resume", "{junk}", "--predict", "{file}", "--input-size", "32"],
    ["--resume", "{junk}", "--eval-only", "--lr", "0.1"],
    ["--resume", "{junk}", "--eval-only", "--epochs", "3"],
    ["--resume", "{junk}", "--eval-only", "--save", "{missing}/x.npz"],
    ["--resume", "{junk}", "--eval-only", "--plot", "{missing}"],
    ["--summary", "--epochs", "3"],
    ["--summary", "--plot", "{missing}"],
    ["--export-onnx", "{missing}/x.onnx"],
    ["--weights", "{junk}", "--resume", "{junk}", "--predict", "{file}"],
    ["--weights", "{junk}", "--finetune", "{junk}", "--train", "mnist"],
    ["--weights", "{junk}", "--eval-only"],
    ["--summary", "--freeze", "backbone"],
    ["--train", "mnist", "--progressive-size", "32,64"],       # needs --progressive
    ["--train", "mnist", "--progressive", "50"],   # not EfficientNetV2, or more stages than epochs
    ["--train", "mnist", "--scale-jitter", "8,16"],            # below the input size
    ["--train", "mnist", "--recipe"],                          # a NAME to train with
    ["--train", "mnist", "--progressive", "2", "--mixup", "0.2"],   # the stages mix
    ["--summary", "--mixup", "0.2"],
    ["--resume", "{junk}", "--predict", "{file}", "--tta", "flip"],
    ["--no-such-flag"],
    ["--train"],
    ["--epochs"],
]


def cases():
    out = []
    for flag, values, needs in NUMERIC + WORDS + PATHS:
        out += [[*needs, flag, value] for value in values]
    out += COMBINATIONS
    return out


CASES = cases()


@pytest.fixture
def places(tmp_path):
    """Files and folders the cases point at, by name."""
    (tmp_path / "a-file").write_text("a file where a folder belongs")
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not a checkpoint")
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "taken.npz").write_bytes(b"another run's checkpoint")
    return {"file": tmp_path / "a-file", "folder": tmp_path / "a-folder",
            "junk": tmp_path / "junk.npz", "empty": tmp_path / "empty.npz",
            "taken": tmp_path / "taken.npz", "missing": tmp_path / "no-such-place"}


@pytest.fixture
def nothing_heavy_may_run(monkeypatch):
    def reached(*args, **kwargs):
        raise AssertionError("a bad value reached model building or data loading")
    monkeypatch.setattr(pieces, "build_model", reached)
    monkeypatch.setattr(pieces, "load_datasets", reached)


def snapshot(folder):
    """Every file and folder under ``folder`` with its size and modification time."""
    found = {}
    for root, folders, files in os.walk(folder):
        for name in folders + files:
            path = os.path.join(root, name)
            info = os.stat(path)
            found[path] = (info.st_size, info.st_mtime_ns)
    return found


@pytest.mark.parametrize("family", FAMILIES)
def test_every_bad_value_is_one_clear_line(family, places, tmp_path, monkeypatch,
                                           nothing_heavy_may_run, capsys):
    monkeypatch.chdir(tmp_path)               # a default checkpoint would land here
    before = snapshot(tmp_path)
    failures = []
    for case in CASES:
        argv = [str(a).format(**places) for a in case]
        try:
            cli.main(family, argv)
            status = 0
        except SystemExit as stop:
            status = stop.code
        out, err = capsys.readouterr()
        lines = err.splitlines()
        clear = (status == 2 and len(lines) == 1 and "Traceback" not in err
                 and lines[0].startswith(f"{family}: error: ") and not out)
        if not clear:
            failures.append(f"{argv}: status {status}, stderr {err!r}, stdout {out[:200]!r}")
        if snapshot(tmp_path) != before:
            failures.append(f"{argv}: changed the files in {tmp_path}")
            before = snapshot(tmp_path)
    assert not failures, f"{len(failures)} of {len(CASES)} cases:\n" + "\n".join(failures)


def test_the_table_is_as_large_as_reported():
    assert (len(CASES), len(FAMILIES)) == (288, 21)          # 6,048 command lines


@pytest.mark.parametrize("family", FAMILIES)
def test_every_familys_own_defaults_pass_the_same_checks(family):
    """The ranges refuse bad values, not a family's published recipe."""
    import argparse
    defaults = cli.family_defaults(family)
    args = argparse.Namespace(**{key: None for key in cli.BUILTIN_DEFAULTS})
    for dataset in ("mnist", "cifar10"):
        for variant in cli.family_variants(family):
            settings = cli.resolve_settings(defaults, args, variant, dataset)
            cli.check_optimizer_and_schedule(settings)
