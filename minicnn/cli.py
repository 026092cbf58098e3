"""The one command line every architecture shares.

    python -m architectures.lenet5 --train mnist                  # train, evaluate, save
    python -m architectures.lenet5 --variant lecun98 --train mnist
    python -m architectures.resnet --variant resnet18 --train cifar10 --epochs 30
    python -m architectures.lenet5 --summary                      # layers, shapes, FLOPs
    python -m architectures.lenet5 --resume checkpoints/lenet5-mnist.npz --eval-only
    python -m architectures.lenet5 --resume checkpoints/lenet5-mnist.npz --predict digit.png

Every module in ``architectures/`` ends with::

    if __name__ == "__main__":
        from minicnn.cli import main
        main()

and ``main`` works out which family is running from ``__main__.__spec__`` (``python -m
architectures.lenet5``) or, failing that, from ``sys.argv[0]``.

Per-family defaults: ``CLI_DEFAULTS``
-------------------------------------
A family module may define a module-level dict ``CLI_DEFAULTS`` whose keys are the
options' names with ``_`` for ``-`` (``batch_size`` for ``--batch-size``), plus a few
keys with no option of their own::

    CLI_DEFAULTS = {
        "variant": "inception_v3",               # the --variant used when none is given
        "epochs": 10, "batch_size": 32, "optimizer": "rmsprop", "lr": 0.045,
        "momentum": 0.9, "weight_decay": 4e-5, "schedule": "exponential:0.94",
        "label_smoothing": 0.1, "input_size": 75, "augment": "translate",
        "optimizer_options": {"rmsprop": {"alpha": 0.9, "eps": 1.0}},  # per optimizer
        "datasets": {"cifar10": {"epochs": 30}},            # per-dataset overrides
        "variants": {"inception_v3_small": {"lr": 0.01}},   # per-variant overrides
    }

A setting is taken from the first of these that gives it: the command line; the
checkpoint being resumed (the settings it was trained with); ``CLI_DEFAULTS["variants"]
[variant]``; ``CLI_DEFAULTS["datasets"][dataset]``; ``CLI_DEFAULTS``; ``BUILTIN_DEFAULTS``
below. ``input_size`` left unset means the size the architecture was registered with.

Errors
------
Everything a user can get wrong is checked before a model is built or data is loaded:
every number is finite and in its range (``--lr nan``, ``--momentum 5``, ``--seed -1`` are
refused as they are parsed), an option that would be silently ignored is refused (``--sync-bn``
without ``--distributed``, ``--lr`` with ``--eval-only``), every input path exists and is
what it should be (a file, a folder), every output location can be written and every
optional dependency a flag needs is installed (``OUTPUT_PATHS``). A failure ends the
program with one line on stderr and exit status 2; no traceback. An unexpected error is
reported as a bug (one line saying where to report it; the traceback with ``--debug`` or
``MINICNN_DEBUG=1``). Ctrl-C or SIGTERM during training saves a checkpoint and exits with
status 130 (143 for SIGTERM); a second one quits at once without saving.

Checkpoints
-----------
A run writes ``--save PATH`` (default ``checkpoints/VARIANT-DATASET.npz``) with its
history beside it. It never replaces another run's files: the default name becomes
``VARIANT-DATASET-2.npz`` (``-3``, ...) when taken, and an explicit ``--save`` that is taken
is refused unless ``--overwrite`` says so. ``--resume PATH`` continues that run in PATH
itself. On resume the command line wins over the checkpoint's settings, which win over the
family's defaults; the settings that cannot change mid-run (``FIXED_ON_RESUME``) keep their
saved values, with one line each saying so.

Only ``argparse`` is imported before the arguments are parsed, so ``--help`` is instant;
NumPy, the engine and the datasets load afterwards.
"""
import argparse
import math
import os
import signal
import sys
import time

BUILTIN_DEFAULTS = {
    "epochs": 10, "batch_size": 128, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9,
    "weight_decay": 0.0, "schedule": "cosine", "label_smoothing": 0.0, "seed": 0,
    "device": "cpu", "input_size": None, "limit_train": None, "augment": None,
    "optimizer_options": {},
}
# The settings a checkpoint records and a resumed run takes back.
TRAINING_SETTINGS = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay",
                     "schedule", "label_smoothing", "seed", "input_size", "limit_train",
                     "augment", "optimizer_options")
# What a resumed run cannot change, and why: they decide which batch comes next.
FIXED_ON_RESUME = {
    "batch_size": "the saved position inside the epoch is counted in its batches",
    "seed": "it decides the order and augmentation of every epoch",
    "limit_train": "it decides which images are trained on",
    "input_size": "the network and its preprocessing were set up for it",
    "optimizer": "the saved optimizer state (momentum, moments) belongs to it",
}
DATASET_AUGMENT = {"mnist": "none", "cifar10": "crop-flip"}   # a folder of photos: "flip"
AUGMENTATIONS = ("none", "translate", "crop-flip", "flip")      # minicnn.data.transforms
PLOT_FILES = ("learning_curves.png", "filters.png", "feature_maps.png",
              "confusion_matrix.png", "worst_misclassified.png")   # minicnn.plots.write_all
REPORT_BUGS = "the minicnn issue tracker"
DEBUG_ENV = "MINICNN_DEBUG"


class CliError(Exception):
    """Bad input or an expected failure: one line on stderr, exit status ``status``."""
    status, prefix = 2, "error: "


class Interrupted(CliError):
    """Ctrl-C or SIGTERM: one line, exit status 128 + the signal's number."""
    prefix = ""

    def __init__(self, message, status=130):
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # argparse prints usage plus the error; one line is clearer
        raise CliError(f"{message} (see --help)")


# ----------------------------------------------------------------------------- numbers

class NumberRange:
    """The values a numeric option may take: finite, of one kind (whole or real), between
    ``low`` and ``high`` (each bound included unless marked open). It parses the option's
    text (``type=`` of argparse) and checks values that come from elsewhere (a family's
    defaults, a checkpoint), with the same message either way."""

    def __init__(self, kind, low, high, low_open=False, high_open=False):
        self.kind, self.low, self.high = kind, low, high
        self.low_open, self.high_open = low_open, high_open

    def describe(self):
        noun = "a whole number" if self.kind is int else "a number"
        low = f"above {self.low:,}" if self.low_open else f"at least {self.low:,}"
        high = f"below {self.high:,}" if self.high_open else f"at most {self.high:,}"
        return f"{noun} {low} and {high}"

    def contains(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __call__(self, text):
        """argparse's ``type``: the value of ``text``, or ArgumentTypeError saying why not."""
        try:
            value = int(text, 10) if self.kind is int else float(text)
        except ValueError:
            value = None
        if value is None or not self.contains(value):
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}")
        return value

    def check(self, value, key, source):
        if not self.contains(value):
            raise CliError(f"--{key.replace('_', '-')} {value!r} from {source}: expected "
                           f"{self.describe()}")


RANGES = {
    "epochs": NumberRange(int, 1, 100_000),
    "batch_size": NumberRange(int, 1, 65_536),
    "lr": NumberRange(float, 0, 10, low_open=True),
    "momentum": NumberRange(float, 0, 1, high_open=True),
    "weight_decay": NumberRange(float, 0, 1, high_open=True),
    "label_smoothing": NumberRange(float, 0, 1, high_open=True),
    "limit_train": NumberRange(int, 1, 1_000_000_000),
    "seed": NumberRange(int, 0, 2 ** 32 - 1),
    "input_size": NumberRange(int, 1, 4096),
    "measure": NumberRange(int, 1, 65_536),
}


# ----------------------------------------------------------------------------- options that need others

# (option, the option it needs, why): given without it, it would be silently ignored
NEEDS = (
    ("sync_bn", "distributed", "synchronized batch norm is across the ranks of --distributed"),
    ("measure", "summary", "it measures the step that --summary describes"),
)
# pairs that contradict each other
CONFLICTS = (
    ("eval_only", "predict", "give one of them"),
    ("resume", "finetune", "--resume continues a run, --finetune starts a new one from "
                           "its weights"),
    ("weights", "resume", "--weights starts from pretrained weights, --resume continues a "
                          "run"),
    ("weights", "finetune", "give one set of starting weights"),
)
# options that only a training run uses
TRAINING_ONLY = ("epochs", "lr", "optimizer", "momentum", "weight_decay", "schedule",
                 "label_smoothing", "augment", "limit_train", "save", "overwrite", "plot",
                 "finetune", "freeze", "distributed", "sync_bn")


def _flag(key):
    return "--" + key.replace("_", "-")


def _given(args, key):
    value = getattr(args, key, None)
    return value is not None and value is not False


def exporting_only(args):
    """``--resume CK --export-onnx PATH`` with no --train or --epochs exports the trained
    network; it does not continue the run."""
    return bool(args.export_onnx and args.resume and not args.train and args.epochs is None)


def check_option_combinations(args):
    """Refuse what would be silently ignored or contradicts itself."""
    for key, needed, why in NEEDS:
        if _given(args, key) and not _given(args, needed):
            raise CliError(f"{_flag(key)} needs {_flag(needed)}: {why}")
    for first, second, why in CONFLICTS:
        if _given(args, first) and _given(args, second):
            raise CliError(f"{_flag(first)} and {_flag(second)} do not go together: {why}")
    if _given(args, "freeze") and not (_given(args, "finetune") or _given(args, "weights")):
        raise CliError("--freeze needs --finetune or --weights: it freezes layers of the "
                       "network they start from")
    using_checkpoint = args.eval_only or args.predict or exporting_only(args)
    training = (args.train or args.resume) and not using_checkpoint
    if not training:
        for key in TRAINING_ONLY:
            if _given(args, key):
                doing = ("--eval-only" if args.eval_only else "--predict" if args.predict
                         else "--summary" if args.summary else "this command")
                raise CliError(f"{_flag(key)} only applies to training (--train DATASET or "
                               f"--resume CHECKPOINT), not to {doing}")
    if using_checkpoint and args.input_size is not None:
        raise CliError("--input-size cannot change a trained checkpoint's input size under "
                       f"{'--eval-only' if args.eval_only else '--predict'}")


# ----------------------------------------------------------------------------- the family

def detect_family():
    """``lenet5`` for ``python -m architectures.lenet5`` (or ``python .../lenet5.py``)."""
    main_module = sys.modules.get("__main__")
    spec = getattr(main_module, "__spec__", None)
    if spec is not None and spec.name.startswith("architectures."):
        return spec.name.rsplit(".", 1)[-1]
    return os.path.splitext(os.path.basename(sys.argv[0] or "minicnn"))[0]


def family_module(family):
    """The family's module: ``__main__`` itself when it is the running program."""
    main_module = sys.modules.get("__main__")
    spec = getattr(main_module, "__spec__", None)
    if spec is not None and spec.name == f"architectures.{family}":
        return main_module
    import importlib
    try:
        return importlib.import_module(f"architectures.{family}")
    except ModuleNotFoundError as error:
        if error.name == f"architectures.{family}":
            raise CliError(f"unknown architecture family {family!r}") from None
        raise


def family_defaults(family):
    defaults = dict(BUILTIN_DEFAULTS)
    defaults.update(getattr(family_module(family), "CLI_DEFAULTS", {}))
    return defaults


def family_variants(family):
    """The names this family registers. Only the family's own module is imported: loading
    the whole zoo would be slower, and one broken module would break every command line."""
    import architectures
    family_module(family)
    return architectures.available(family)


# ----------------------------------------------------------------------------- the parser

def build_parser(family, defaults, variants):
    """The parser; every option is one ``add`` line, its help showing the family default."""
    parser = _Parser(
        prog=f"python -m architectures.{family}",
        description=f"Train, evaluate, inspect or run a {family} network (minicnn).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               f"  python -m architectures.{family} --train mnist\n"
               f"  python -m architectures.{family} --summary\n"
               f"  python -m architectures.{family} --resume CHECKPOINT --predict IMAGE ...\n"
               "Data is kept in $MINICNN_DATA or ~/.cache/minicnn (see --data-dir).")

    def add(group, flag, help, **options):
        key = flag.lstrip("-").replace("-", "_")
        if key in defaults and defaults[key] is not None and "action" not in options:
            help += f" (default: {defaults[key]})"
        group.add_argument(flag, help=help, **options)

    task = parser.add_argument_group("what to do")
    add(task, "--train", "train on DATASET: mnist, cifar10, or a folder with one sub-folder "
        "of images per class", metavar="DATASET")
    add(task, "--eval-only", "only evaluate the --resume checkpoint on the test set",
        action="store_true")
    add(task, "--summary", "print layers, output shapes, parameters and FLOPs",
        action="store_true")
    add(task, "--predict", "print the top-5 classes of each image, using the --resume "
        "checkpoint", nargs="+", metavar="IMAGE")

    model = parser.add_argument_group("network")
    add(model, "--variant", "which network of this family: " + ", ".join(variants),
        metavar="NAME")
    add(model, "--input-size", "input side in pixels (images are padded or resized to it); "
        "default: the size the variant was published for", type=RANGES["input_size"],
        metavar="PIXELS")

    recipe = parser.add_argument_group("training")
    add(recipe, "--epochs", "passes over the training set", type=RANGES["epochs"], metavar="N")
    add(recipe, "--batch-size", "images per step", type=RANGES["batch_size"], metavar="N")
    add(recipe, "--lr", "learning rate (at its peak, with a schedule), in (0, 10]",
        type=RANGES["lr"])
    add(recipe, "--optimizer", "update rule", choices=("sgd", "adam", "adamw", "rmsprop"))
    add(recipe, "--momentum", "momentum of sgd and rmsprop, in [0, 1)", type=RANGES["momentum"])
    add(recipe, "--weight-decay", "L2 penalty (decoupled for adamw), in [0, 1)",
        type=RANGES["weight_decay"])
    add(recipe, "--schedule", "learning-rate schedule: " + _schedule_help(), metavar="SPEC")
    add(recipe, "--label-smoothing", "label smoothing ε of the cross-entropy "
        "(Szegedy et al. 2016 use 0.1), in [0, 1)", type=RANGES["label_smoothing"],
        metavar="EPS")
    add(recipe, "--augment", "training augmentation (default: none for mnist, crop-flip for "
        "cifar10, flip for folders)", choices=AUGMENTATIONS)
    add(recipe, "--limit-train", "train on a random subset of N images (quick runs)",
        type=RANGES["limit_train"], metavar="N")
    add(recipe, "--seed", "seed of initialisation, shuffling and augmentation, 0 to 2**32-1",
        type=RANGES["seed"])

    where = parser.add_argument_group("where")
    add(where, "--device", "run on the CPU (NumPy/Numba) or a CUDA GPU (CuPy)",
        choices=("cpu", "gpu"))
    add(where, "--data-dir", "folder holding (and caching) datasets", metavar="DIR")
    add(where, "--save", "checkpoint written after every epoch (default: "
        "checkpoints/VARIANT-DATASET.npz, or -2, -3, ... when taken; metrics go beside it); "
        "a path ending in .safetensors writes the same checkpoint as safetensors",
        metavar="PATH")
    add(where, "--overwrite", "let --save (or the default name, or --plot's files) replace "
        "another run's files", action="store_true")
    add(where, "--resume", "continue training from (or evaluate, or predict with) this "
        "checkpoint", metavar="PATH")
    add(where, "--distributed", "data-parallel training over the ranks of an MPI job, e.g. "
        "mpirun -np 2 python -m architectures.lenet5 --train mnist --distributed; "
        "--batch-size is per rank; rank 0 prints and saves", action="store_true")
    add(where, "--sync-bn", "with --distributed: batch norm over all ranks' samples "
        "(SyncBatchNorm)", action="store_true")
    see = parser.add_argument_group("seeing inside and transfer")
    add(see, "--measure", "with --summary: also run one real training step at batch N and "
        "show its measured peak memory next to the rule of thumb", type=RANGES["measure"],
        metavar="N")
    add(see, "--plot", "after training, write learning curves, first-layer filters, feature "
        "maps, the confusion matrix and the worst misclassified images as PNGs into DIR",
        metavar="DIR")
    add(see, "--finetune", "start from the weights of this checkpoint (a head of another "
        "size is skipped and reported)", metavar="CHECKPOINT")
    add(see, "--freeze", "with --finetune or --weights: none, backbone (train only the "
        "head) or all-but-last-N", type=freeze_mode, metavar="MODE")
    add(see, "--weights", "pretrained weights for the variant: a torchvision .pth/.pt, or a "
        ".safetensors/.npz state dict (see README). With --predict: the top-5 ImageNet "
        "classes of each photo; with --eval-only --train FOLDER: top-1/top-5 on photos filed "
        "by ImageNet class; with --train: start from them (a head of another size is "
        "replaced); with --summary: the network they fit", metavar="PATH")
    add(see, "--export-onnx", "write the network as an ONNX file (after training, or from "
        "--resume or --weights); needs pip install 'minicnn[onnx]'", metavar="PATH")
    trouble = parser.add_argument_group("trouble")
    add(trouble, "--debug", f"show the full traceback of an internal error (or set "
        f"{DEBUG_ENV}=1)", action="store_true")
    return parser


def freeze_mode(text):
    """argparse's ``type`` for --freeze: ``none``, ``backbone`` or ``all-but-last-N`` with
    N a whole number from 1 (the network, once built, bounds N from above)."""
    prefix = "all-but-last-"
    count = text[len(prefix):] if text.startswith(prefix) else None
    if text in ("none", "backbone") or (count is not None and count.isdigit() and int(count) >= 1):
        return text
    raise argparse.ArgumentTypeError(f"expected none, backbone or all-but-last-N (N at least "
                                     f"1), got {text!r}")


def _schedule_help():
    # minicnn.train.SCHEDULE_HELP, repeated here so that --help imports nothing heavy
    return ("constant; cosine; step:N[:G] (×G every N epochs); multistep:A,B[:G]; "
            "exponential:G; decay:E:G (×G every E epochs); warmup:W+SCHEDULE")


# ----------------------------------------------------------------------------- settings

def resolve_settings(defaults, args, variant, dataset, saved=None):
    """Merge defaults, per-dataset and per-variant overrides, a resumed checkpoint's
    settings and the command line, in that order of increasing priority."""
    settings = {key: defaults.get(key) for key in BUILTIN_DEFAULTS}
    for layer in (defaults.get("datasets", {}).get(dataset, {}),
                  defaults.get("variants", {}).get(variant, {}),
                  saved or {}):
        settings.update({k: v for k, v in layer.items() if k in BUILTIN_DEFAULTS})
    for key in BUILTIN_DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    if settings["augment"] is None:
        settings["augment"] = DATASET_AUGMENT.get(dataset, "flip") if dataset else "none"
    # the command line was checked as it was parsed; defaults and checkpoints are checked
    # here with the same ranges (a hand-edited CLI_DEFAULTS, an old checkpoint)
    for key, allowed in RANGES.items():
        if key in settings and settings[key] is not None:
            source = "the command line" if getattr(args, key, None) is not None else \
                "the checkpoint" if saved and key in saved else "the family's defaults"
            allowed.check(settings[key], key, source)
    return settings


def resolve_variant(family, requested, variants):
    """``requested`` as registered, or its short form (``lecun98`` for ``lenet5_lecun98``)."""
    for name in (requested, f"{family}_{requested}"):
        if name in variants:
            return name
    raise CliError(f"unknown variant {requested!r} for {family}; choose from "
                   f"{', '.join(variants)}")


def dataset_name(train):
    """``mnist`` / ``cifar10`` as given; a folder by its absolute path."""
    if train is None:
        return None
    if train.lower() in ("mnist", "cifar10", "cifar-10"):
        return train.lower().replace("-", "")
    if os.path.isdir(train):
        return os.path.abspath(train)
    if os.path.exists(train):
        raise CliError(f"--train {train}: a file, not a folder (give mnist, cifar10, or a "
                       "folder with one sub-folder of images per class)")
    raise CliError(f"unknown dataset {train!r}: use mnist, cifar10, or the path of a folder "
                   "with one sub-folder of images per class")


def dataset_tag(name):
    return os.path.basename(name.rstrip(os.sep)) if os.sep in name else name


# ----------------------------------------------------------------------------- paths

class PathOption:
    """A flag naming a path: ``kind`` is "file", "files" (several) or "folder"; an input
    must exist (a folder may be missing where it will be created); an output's folder must
    be writable, and ``needs`` lists the optional packages writing it takes (import name
    -> pip extra). A new output flag is one more row of ``OUTPUT_PATHS``."""

    def __init__(self, key, kind, may_be_missing=False, needs=None):
        self.key, self.kind, self.may_be_missing = key, kind, may_be_missing
        self.needs = needs or {}

    @property
    def flag(self):
        return _flag(self.key)


INPUT_PATHS = (
    PathOption("resume", "file"),
    PathOption("finetune", "file"),
    PathOption("predict", "files"),
    PathOption("weights", "file"),
    PathOption("data_dir", "folder", may_be_missing=True),
)
OUTPUT_PATHS = (
    PathOption("save", "file"),
    PathOption("plot", "folder", needs={"matplotlib": "plot"}),
    PathOption("export_onnx", "file", needs={"onnx": "onnx"}),
)


def check_inputs(args):
    """Every input path exists and is a file or a folder as its flag says."""
    for option in INPUT_PATHS:
        value = getattr(args, option.key, None)
        for path in ([] if value is None else value if option.kind == "files" else [value]):
            if option.kind == "folder":
                if os.path.exists(path) and not os.path.isdir(path):
                    raise CliError(f"{option.flag} {path}: a file, not a folder")
                if not os.path.exists(path) and not option.may_be_missing:
                    raise CliError(f"{option.flag} {path}: no such folder")
                if not os.path.exists(path):
                    _nearest_folder(path, option.flag)
            elif os.path.isdir(path):
                raise CliError(f"{option.flag} {path}: a folder, not a file")
            elif not os.path.exists(path):
                what = "checkpoint" if option.key in ("resume", "finetune") else "file"
                raise CliError(f"{option.flag}: {what} {path} does not exist")


def check_outputs(args, resolved=None):
    """Fail now, not after an hour of training: every output location can be written and
    every optional package its flag needs is installed. ``resolved`` gives paths decided
    by the program (the default checkpoint name) rather than typed."""
    resolved = resolved or {}
    for option in OUTPUT_PATHS:
        path = resolved.get(option.key, getattr(args, option.key, None))
        if path is None:
            continue
        for module, extra in option.needs.items():
            _require(module, extra, option.flag)
        if option.kind == "folder":
            check_writable_folder(path, option.flag)
        else:
            check_writable(path, option.flag)


def _require(module, extra, flag):
    import importlib.util
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise CliError(f"{flag} needs {module}, which is not installed: "
                       f"pip install 'minicnn[{extra}]'")


def _nearest_folder(folder, flag, path=None):
    """The nearest existing folder at or above ``folder`` (which need not exist yet), or a
    CliError about ``flag``'s ``path`` when a file stands in the way."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise CliError(f"{flag} {path or folder}: cannot write there: {existing} is a file, "
                       "not a folder")
    return existing


def _try_writing_in(folder, flag, path):
    import tempfile
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise CliError(f"{flag} {path}: cannot write in {folder} "
                       f"({error.strerror or error})") from None


def check_writable(path, flag="--save"):
    """``path`` can be created or replaced as a file; nothing is created now."""
    if os.path.isdir(path):
        raise CliError(f"{flag} {path}: cannot write there: it is a folder (give a file name "
                       f"such as {os.path.join(path, 'model.npz')})")
    folder = _nearest_folder(os.path.dirname(os.path.abspath(path)), flag, path)
    _try_writing_in(folder, flag, path)


def check_writable_folder(path, flag):
    """``path`` is, or can become, a folder that files can be written in."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise CliError(f"{flag} {path}: cannot write there: a file, not a folder")
    _try_writing_in(_nearest_folder(path, flag), flag, path)


# ----------------------------------------------------------------------------- whose files

def run_files(checkpoint):
    """Every file a run keeps beside its checkpoint: the checkpoint and its history."""
    from minicnn.train import history_paths
    return (os.fspath(checkpoint), *history_paths(checkpoint))


def _taken(checkpoint):
    return any(os.path.isfile(path) for path in run_files(checkpoint))


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def choose_checkpoint(args, architecture, dataset):
    """Where this run saves, and a note when that is not the name the user would expect.

    A run replaces only its own files: the checkpoint it resumes, or one it writes itself.
    The default name moves on to ``-2``, ``-3``, ... past earlier runs; an explicit
    ``--save`` holding another run is refused unless ``--overwrite`` is given."""
    if args.save is None and args.resume:
        return args.resume, None
    if args.save is not None:
        if args.resume and _same_file(args.save, args.resume):
            return args.save, None
        if _taken(args.save) and not args.overwrite:
            raise CliError(f"--save {args.save} already holds another run's checkpoint: "
                           f"continue it with --resume {args.save}, replace it with "
                           "--overwrite, or choose another --save")
        return args.save, None
    default = os.path.join("checkpoints", f"{architecture}-{dataset_tag(dataset)}.npz")
    if args.overwrite or not _taken(default):
        return default, None
    stem, extension = os.path.splitext(default)
    number = 2
    while _taken(f"{stem}-{number}{extension}"):
        number += 1
    chosen = f"{stem}-{number}{extension}"
    return chosen, (f"note: {default} holds an earlier run, kept as it is; this run saves to "
                    f"{chosen} (continue the earlier one with --resume {default}, or replace "
                    "it with --overwrite)")


def check_plot_folder(args):
    """--plot into a folder holding another run's pictures replaces them only when told."""
    if args.plot is None or args.overwrite or args.resume:
        return
    existing = [name for name in PLOT_FILES if os.path.exists(os.path.join(args.plot, name))]
    if existing:
        raise CliError(f"--plot {args.plot} already holds another run's plots "
                       f"({', '.join(existing)}): choose another folder or add --overwrite")


# ----------------------------------------------------------------------------- pieces

def load_datasets(name, data_dir, image_size=32, channels=3, seed=0):
    from minicnn.data import load_dataset
    return load_dataset(name, data_dir=data_dir, image_size=image_size, channels=channels,
                        seed=seed)


def build_model(architecture, num_classes, in_channels, seed, **options):
    import architectures
    from minicnn.nn import init
    import numpy as np
    init.manual_seed(seed)      # the same seed builds the same initial weights
    np.random.seed(seed)
    try:
        return architectures.create(architecture, num_classes=num_classes,
                                    in_channels=in_channels, **options)
    except (TypeError, ValueError) as error:
        raise CliError(f"cannot build {architecture} for {in_channels}-channel input and "
                       f"{num_classes} classes: {error}") from None


def probe_input(model, architecture, in_channels, input_size, device):
    """One forward pass on a blank image: does the network take this input size?"""
    import numpy as np
    from minicnn.backend import to_device
    from minicnn.tensor import Tensor, no_grad
    blank = np.zeros((1, in_channels, input_size, input_size), dtype=np.float32)
    model.eval()
    try:
        with no_grad():
            model(Tensor(to_device(blank, device)))
    except (ValueError, TypeError, IndexError) as error:
        raise CliError(f"{architecture} cannot take {input_size}x{input_size} input: "
                       f"{str(error).splitlines()[0]}") from None
    finally:
        model.train()


def published_input(architecture):
    import architectures
    return architectures.entry(architecture).input_size


def make_pipeline(meta, augment):
    from minicnn.data.transforms import pipeline
    return pipeline(meta["image_size"], meta["channels"], meta["input_size"],
                    meta["in_channels"], meta["mean"], meta["std"], augment)


def prefetch_depth(transform):
    """Batches to prepare ahead in a background thread: two when preparing one costs real
    work (augmentation, resizing); none for a plain gather and normalise, which takes
    less time than handing a batch between threads is worth on a 2-core machine."""
    from minicnn.data.transforms import Resize
    busy = transform.random or any(isinstance(t, Resize) for t in transform.transforms)
    return 2 if busy else 0


def load_weights(architecture, path):
    """--weights: ``architecture`` built as the network the file's weights were trained in
    (torchvision's options where they differ from ours), with them loaded."""
    from architectures import pretrained
    from minicnn.io import FormatError
    try:
        return pretrained.create_with_weights(architecture, path)
    except FormatError as error:
        raise CliError(str(error).splitlines()[0]) from None
    except (KeyError, ValueError, TypeError) as error:
        raise CliError(f"--weights {path}: {str(error).splitlines()[0]}") from None


def weights_build_options(architecture):
    """The build options torchvision's weights for ``architecture`` need ({} if none)."""
    from architectures import pretrained
    try:
        return dict(pretrained.source(architecture).options)
    except (KeyError, ValueError):
        return {}


def predict_imagenet(architecture, weights, images, device, top=5):
    """--weights W --predict PHOTO: the top ImageNet classes of each photo, with the
    preprocessing the weights were trained with (resize, centre crop, mean/std)."""
    from minicnn.data.imagenet import predict_topk, read_rgb
    model = load_weights(architecture, weights).to(device)
    for path in images:
        try:
            image = read_rgb(path)
        except (OSError, ValueError) as error:
            raise CliError(f"{path}: {str(error).splitlines()[0]}") from None
        print(path)
        for name, probability in predict_topk(model, image, k=top, variant=architecture):
            print(f"  {name:>28}  {100 * probability:6.2f}%")


def evaluate_imagenet_folder(architecture, weights, folder, settings):
    """--eval-only --weights W --train FOLDER: ImageNet top-1/top-5 on labelled photos."""
    from minicnn.data.imagenet import evaluate_folder
    if not os.path.isdir(folder):
        raise CliError(f"--eval-only --weights evaluates a folder of photos; {folder} is not "
                       "a folder")
    model = load_weights(architecture, weights).to(settings["device"])
    result = evaluate_folder(model, folder, variant=architecture,
                             batch_size=settings["batch_size"])
    print(f"{architecture} with {weights} on {folder}: top-1 {100 * result['top1']:.2f}%  "
          f"top-5 {100 * result['topk']:.2f}%  ({result['images']:,} images, "
          f"{result['classes']} classes)")
    return result


def export_onnx(model, path, input_shape):
    """--export-onnx: the network as an ONNX file, checked by the onnx package."""
    from minicnn.onnx import ExportError, export
    try:
        export(model, path, input_shape=input_shape)
    except ExportError as error:
        raise CliError(f"--export-onnx: {str(error).splitlines()[0]}") from None
    print(f"ONNX: {path} (input {'x'.join(str(n) for n in input_shape)}, batch dynamic)")


def read_checkpoint(path, family, variants):
    """Load a training checkpoint and check it belongs to this family."""
    from minicnn.train import load_training_checkpoint
    if not os.path.isfile(path):
        raise CliError(f"checkpoint {path} does not exist")
    try:
        state = load_training_checkpoint(path)
    except ValueError as error:
        raise CliError(str(error).splitlines()[0]) from None
    meta = state.get("meta") or {}
    if meta.get("architecture") not in variants:
        raise CliError(f"checkpoint {path} holds a {meta.get('architecture')!r} network "
                       f"(family {meta.get('family')!r}), not one of {family}'s "
                       f"({', '.join(variants)})")
    missing = [key for key in CHECKPOINT_META if key not in meta]
    if missing or not isinstance(state.get("model"), dict) or "progress" not in state:
        lacking = ", ".join(missing) or "its weights or progress"
        raise CliError(f"checkpoint {path} lacks {lacking}: it was not written by this "
                       "command line (or was edited)")
    return state


# what the command line records about a run, and needs back to evaluate or continue it
CHECKPOINT_META = ("architecture", "dataset", "classes", "num_classes", "in_channels",
                   "channels", "image_size", "input_size", "mean", "std")


def restore_weights(state, model, path):
    """The checkpoint's weights into ``model``, or one line saying why they do not fit."""
    from minicnn.train import restore
    try:
        restore(state, model)
    except (ValueError, KeyError, TypeError) as error:
        raise CliError(f"checkpoint {path} does not fit its own network "
                       f"({str(error).splitlines()[0]}): it is damaged or was edited") from None


def optimizer_options(settings):
    """The extra constructor arguments declared for the chosen optimizer (if any)."""
    return dict((settings["optimizer_options"] or {}).get(settings["optimizer"], {}))


def check_recipe(settings):
    """Build the optimizer and schedule once on a stand-in parameter, so that a typo in
    --schedule or a bad optimizer option is reported before any data is loaded."""
    import numpy as np
    from minicnn.nn import Parameter
    from minicnn.train import make_optimizer, make_schedule
    try:
        optimizer = make_optimizer(settings["optimizer"], [Parameter(np.zeros(1, np.float32))],
                                   settings["lr"], momentum=settings["momentum"],
                                   weight_decay=settings["weight_decay"],
                                   **optimizer_options(settings))
        make_schedule(settings["schedule"], optimizer, settings["epochs"], 1)
    except (TypeError, ValueError) as error:
        raise CliError(str(error)) from None


def check_device(device):
    if device == "gpu":
        from minicnn.backend import gpu_available
        if not gpu_available():
            raise CliError("--device gpu: no CUDA GPU with CuPy is available "
                           "(pip install 'minicnn[gpu]' on a machine with a GPU)")


def _count(number, singular, plural):
    return f"{number:,} {singular if number == 1 else plural}"


def _say(message):
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- actions

def show_summary(architecture, model, in_channels, input_size, batch_size, measure=None):
    from minicnn.summary import summary
    result = summary(model, (in_channels, input_size, input_size), batch_size,
                     measure=measure is not None, measure_batch_size=measure)
    if result is not None:
        print(result)


def predict(state, images, device, path, top=5):
    """Print the ``top`` most likely classes of each image file."""
    import numpy as np
    from minicnn import functional as F
    from minicnn.backend import to_device
    from minicnn.data.folder import load_image
    from minicnn.tensor import Tensor, no_grad
    meta = state["meta"]
    model = build_model(meta["architecture"], meta["num_classes"], meta["in_channels"], 0)
    restore_weights(state, model, path)
    model.to(device).eval()
    transform = make_pipeline(meta, "none")
    classes = meta["classes"]
    for path in images:
        try:
            picture = load_image(path, meta["channels"], meta["image_size"])
        except ValueError as error:
            raise CliError(str(error)) from None
        note = ""
        if meta["dataset"] == "mnist" and picture.mean() > 127:
            picture = 255 - picture   # MNIST digits are light on dark; photos are the reverse
            note = "  (inverted: MNIST digits are white on black)"
        with no_grad():
            logits = model(Tensor(to_device(transform(picture[None]), device)))
            if isinstance(logits, (tuple, list)):
                logits = logits[0]
            probabilities = to_device(F.softmax(logits, axis=1).data, "cpu")[0]
        order = np.argsort(-probabilities)[:top]
        print(f"{path}{note}")
        for k in order:
            print(f"  {classes[k]:>12}  {100 * probabilities[k]:6.2f}%")


def evaluate_only(state, test, settings, device, path):
    from minicnn.data.loader import DataLoader
    from minicnn.train import evaluate
    meta = state["meta"]
    model = build_model(meta["architecture"], meta["num_classes"], meta["in_channels"], 0)
    restore_weights(state, model, path)
    model.to(device)
    loader = DataLoader(test, batch_size=2 * settings["batch_size"],
                        transform=make_pipeline(meta, "none"))
    result = evaluate(model, loader)
    print(f"{meta['architecture']} on {dataset_tag(meta['dataset'])}: test loss "
          f"{result['loss']:.4f}  accuracy {100 * result['accuracy']:.2f}%  top-5 "
          f"{100 * result['top5']:.2f}%  ({len(test):,} images)")
    return result


def train(family, architecture, dataset, settings, args, state, started, save, note=None):
    """A training run. ``note`` (why it saves under a new name) is said once everything
    that could still refuse the run (data, --finetune, --weights) has been read, so a
    refused run prints only its error."""
    from minicnn.data.loader import DataLoader
    from minicnn.train import TrainingInterrupted, fit, make_optimizer, make_schedule
    if args.distributed and settings["device"] == "gpu":   # one GPU per rank on each machine
        from minicnn.distributed import nccl, world
        nccl.select_device(world())
    input_size = settings["input_size"] or published_input(architecture)
    from minicnn.distributed import main_process_first
    with main_process_first():   # under --distributed rank 0 fetches and caches the data first
        train_set, test_set = load_datasets(dataset, args.data_dir, image_size=input_size,
                                            seed=settings["seed"])
    mean, std = train_set.channel_statistics()   # of the full training set
    train_set = train_set.subset(settings["limit_train"], seed=settings["seed"])

    options = weights_build_options(architecture) if args.weights else {}
    model = build_model(architecture, train_set.num_classes, train_set.channels,
                        settings["seed"], **options)
    meta = {"family": family, "architecture": architecture, "dataset": dataset,
            "classes": list(train_set.classes), "num_classes": train_set.num_classes,
            "in_channels": train_set.channels, "channels": train_set.channels,
            "image_size": int(train_set.image_size[0]), "input_size": int(input_size),
            "mean": list(mean), "std": list(std),
            "settings": {k: settings[k] for k in TRAINING_SETTINGS}}
    if state is not None:
        old = state["meta"]
        if old.get("dataset") != dataset:
            raise CliError(f"checkpoint {args.resume} was trained on "
                           f"{dataset_tag(old.get('dataset'))}, not {dataset_tag(dataset)}")
        meta.update({k: old[k] for k in ("mean", "std")})   # keep the run's normalisation
    model.to(settings["device"])
    probe_input(model, architecture, train_set.channels, input_size, settings["device"])
    if args.summary:
        show_summary(architecture, model, train_set.channels, input_size, settings["batch_size"],
                     args.measure)
    if args.finetune:
        start_from(model, architecture, args.finetune, args.freeze)
    elif args.weights:
        start_from(model, architecture, load_weights(architecture, args.weights).state_dict(),
                   args.freeze, origin=f"--weights {args.weights}")

    batch_size = settings["batch_size"]
    train_transform = make_pipeline(meta, settings["augment"])
    test_transform = make_pipeline(meta, "none")
    train_loader = DataLoader(train_set, batch_size, shuffle=True,
                              drop_last=len(train_set) > batch_size, transform=train_transform,
                              seed=settings["seed"], prefetch=prefetch_depth(train_transform))
    test_loader = DataLoader(test_set, 2 * batch_size, transform=test_transform,
                             prefetch=prefetch_depth(test_transform))
    data_parallel = None
    if args.distributed:   # this rank's shards; the schedule below counts this rank's steps
        from minicnn.distributed import DataParallel
        data_parallel = DataParallel(model, sync_batchnorm=args.sync_bn)
        train_loader = data_parallel.shard(train_loader)
        test_loader = data_parallel.shard(test_loader, remainder="uneven")
    try:
        from minicnn.nn import trainable_parameters   # frozen parameters stay out
        optimizer = make_optimizer(settings["optimizer"], trainable_parameters(model), settings["lr"],
                                   momentum=settings["momentum"],
                                   weight_decay=settings["weight_decay"],
                                   **optimizer_options(settings))
        schedule = make_schedule(settings["schedule"], optimizer, settings["epochs"],
                                 len(train_loader))
    except (TypeError, ValueError) as error:
        raise CliError(str(error)) from None

    print(f"{architecture} on {dataset_tag(dataset)}: {len(train_set):,} training and "
          f"{len(test_set):,} test images, input {train_set.channels}x{input_size}x{input_size}, "
          f"{model.num_parameters():,} parameters")
    print(f"{settings['optimizer']} lr {settings['lr']:g}"
          + (f" momentum {settings['momentum']:g}" if settings["optimizer"] in ("sgd", "rmsprop") else "")
          + f" weight decay {settings['weight_decay']:g}, schedule {settings['schedule']}, "
          f"{_count(settings['epochs'], 'epoch', 'epochs')} of "
          f"{_count(len(train_loader), 'batch', 'batches')} "
          f"of {batch_size}, "
          f"augment {settings['augment']}, seed {settings['seed']}, {settings['device']}")
    if data_parallel is not None:
        print(f"data parallel: {data_parallel.size} ranks x {batch_size} images = "
              f"{data_parallel.size * batch_size} per step"
              + (", synchronized batch norm" if args.sync_bn else ""))
    if note:
        _say(note)
    print(f"checkpoint: {save}" + (f" (resuming {args.resume})" if state is not None else ""),
          flush=True)
    try:
        history = fit(model, optimizer, train_loader, test_loader, settings["epochs"],
                      schedule=schedule, label_smoothing=settings["label_smoothing"],
                      checkpoint=save, metadata=meta, resume=state,
                      progress=sys.stderr.isatty(), log=lambda line: print(line, flush=True),
                      distributed=data_parallel)
    except TrainingInterrupted as interrupted:
        raise Interrupted(f"{interrupted}; continue with --resume {save}",
                          status=128 + (interrupted.signum or signal.SIGINT)) from None
    except KeyboardInterrupt:   # the second Ctrl-C: no saving, but the last save is whole
        raise Interrupted(f"stopped at once without saving; {save} holds the last complete "
                          "checkpoint" if os.path.exists(save) else
                          "stopped at once; nothing was saved") from None
    except (ValueError, KeyError) as error:   # a checkpoint that does not fit this model
        if state is None:
            raise
        raise CliError(f"cannot resume from {args.resume}: {str(error).splitlines()[0]}") from None
    if history and history[-1]["test_accuracy"] is not None:
        last = history[-1]
        print(f"done in {time.perf_counter() - started:.1f} s: test accuracy "
              f"{100 * last['test_accuracy']:.2f}% (top-5 {100 * last['test_top5']:.2f}%), "
              f"checkpoint {save}")
    main_rank = data_parallel is None or data_parallel.is_main_process
    if args.plot and main_rank:
        write_plots(args.plot, model, history, test_set, test_loader, test_transform)
    if args.export_onnx and main_rank:
        export_onnx(model.to("cpu"), args.export_onnx,
                    (train_set.channels, int(input_size), int(input_size)))
    return history


def start_from(model, architecture, checkpoint, freeze, origin=None):
    """--finetune (a checkpoint path) or --weights (a state dict): the arrays that fit,
    then --freeze; none fitting is an error (a checkpoint of another network would
    silently train from scratch)."""
    import zipfile
    from minicnn.nn import apply_freeze, load_partial
    origin = origin or f"--finetune {checkpoint}"
    try:
        report = load_partial(model, checkpoint)
        if not report.loaded:
            raise CliError(f"{origin}: none of its arrays fits {architecture} "
                           f"(another network's checkpoint?); {len(report.skipped)} skipped")
        print(report)
        frozen = apply_freeze(model, freeze or "none")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise CliError(f"{origin}: {str(error).splitlines()[0]}") from None
    print(f"frozen ({freeze or 'none'}): {_count(len(frozen), 'parameter', 'parameters')}")


def write_plots(directory, model, history, test_set, test_loader, test_transform):
    from minicnn import plots
    labels, scores = plots.scores_for(model, test_loader)
    paths = plots.write_all(directory, history=history, model=model, images=test_set.images,
                            labels=labels, scores=scores, class_names=list(test_set.classes),
                            preprocess=lambda batch: test_transform(batch, None))
    print("plots: " + ", ".join(paths))


# ----------------------------------------------------------------------------- main

def run(family, argv):
    started = time.perf_counter()
    defaults = family_defaults(family)
    variants = family_variants(family)
    if not variants:
        raise CliError(f"the {family} family registers no architectures")
    args = build_parser(family, defaults, variants).parse_args(argv)
    if not (args.train or args.resume or args.summary or args.eval_only or args.predict
            or args.export_onnx):
        raise CliError("nothing to do: give --train DATASET, --resume CHECKPOINT, --summary, "
                       "--eval-only, --predict IMAGE or --export-onnx PATH")
    if args.eval_only and not (args.resume or args.weights):
        raise CliError("--eval-only needs a trained checkpoint (--resume PATH) or pretrained "
                       "weights and a folder of labelled photos (--weights PATH --train "
                       "FOLDER)")
    if args.eval_only and args.weights and not args.train:
        raise CliError("--eval-only --weights needs the photos to evaluate on: --train FOLDER "
                       "with one sub-folder per ImageNet class (named by class or index)")
    if args.predict and not (args.resume or args.weights):
        raise CliError("--predict needs a trained checkpoint (--resume PATH) or pretrained "
                       "weights (--weights PATH)")
    if args.export_onnx and not (args.train or args.resume or args.weights):
        raise CliError("--export-onnx needs a network to export: --train DATASET, --resume "
                       "CHECKPOINT or --weights PATH")
    check_option_combinations(args)
    check_inputs(args)
    if args.distributed:
        start_distributed()

    state = read_checkpoint(args.resume, family, variants) if args.resume else None
    if args.variant is not None:
        architecture = resolve_variant(family, args.variant, variants)
        if state is not None and state["meta"]["architecture"] != architecture:
            raise CliError(f"checkpoint {args.resume} holds {state['meta']['architecture']}, "
                           f"not {architecture}")
    elif state is not None:
        architecture = state["meta"]["architecture"]
    else:
        architecture = resolve_variant(family, defaults.get("variant") or variants[0], variants)

    saved_dataset = state["meta"].get("dataset") if state is not None else None
    dataset = dataset_name(args.train) if args.train else saved_dataset
    saved = state["meta"].get("settings") if state is not None else None
    settings = resolve_settings(defaults, args, architecture, dataset, saved)
    check_device(settings["device"])
    training = (args.train or args.resume) and not (args.eval_only or args.predict
                                                     or exporting_only(args))
    if training:
        if state is not None:
            for line in reconcile_resume(settings, state, args):
                _say(line)
        check_recipe(settings)
        save, note = choose_checkpoint(args, architecture, dataset)
        check_outputs(args, resolved={"save": save})
        check_plot_folder(args)
    else:
        check_outputs(args)

    if args.summary and not args.train:
        import architectures
        entry = architectures.entry(architecture)   # the network as published
        input_size = args.input_size or entry.input_size
        if args.weights:
            model = load_weights(architecture, args.weights)
        else:
            model = build_model(architecture, entry.num_classes, entry.in_channels,
                                settings["seed"])
        model.to(settings["device"])        # --measure runs its step where training would
        probe_input(model, architecture, entry.in_channels, input_size, settings["device"])
        show_summary(architecture, model, entry.in_channels, input_size, settings["batch_size"],
                     args.measure)
    if args.export_onnx and not training:
        if args.weights:
            import architectures
            entry = architectures.entry(architecture)
            model = load_weights(architecture, args.weights)
            shape = (entry.in_channels, args.input_size or entry.input_size,
                     args.input_size or entry.input_size)
        else:
            meta = state["meta"]
            model = build_model(meta["architecture"], meta["num_classes"], meta["in_channels"], 0)
            restore_weights(state, model, args.resume)
            shape = (meta["in_channels"], meta["input_size"], meta["input_size"])
        export_onnx(model, args.export_onnx, shape)
    if args.predict and args.weights:
        predict_imagenet(architecture, args.weights, args.predict, settings["device"])
    elif args.predict:
        predict(state, args.predict, settings["device"], args.resume)
    elif args.eval_only and args.weights:
        evaluate_imagenet_folder(architecture, args.weights, args.train, settings)
    elif args.eval_only:
        if dataset != saved_dataset:
            raise CliError(f"checkpoint {args.resume} was trained on "
                           f"{dataset_tag(saved_dataset)}; it cannot be evaluated on "
                           f"{dataset_tag(dataset)}")
        meta = state["meta"]
        _, test = load_datasets(dataset, args.data_dir, meta["image_size"], meta["channels"],
                                settings["seed"])
        evaluate_only(state, test, settings, settings["device"], args.resume)
    elif training:   # --resume alone continues the saved run
        train(family, architecture, dataset, settings, args, state, started, save, note)
    return 0


def reconcile_resume(settings, state, args):
    """A resumed run: the command line wins over the checkpoint (``resolve_settings``
    already merged them), except for ``FIXED_ON_RESUME``, which keep their saved values.
    Returns one line for each setting that changes and each that cannot."""
    saved = state["meta"].get("settings") or {}
    lines = []
    for key, why in FIXED_ON_RESUME.items():
        was = saved.get(key)
        if key == "input_size" and was is None:
            was = state["meta"].get("input_size")   # left to the variant: what it was
        given = getattr(args, key, None)
        if given is not None and given != was:
            lines.append(f"note: {_flag(key)} {given} ignored: a resumed run keeps "
                         f"{was} ({why}); to change it, start a new run with --finetune "
                         f"{args.resume}")
        settings[key] = saved.get(key, settings[key])
    for key in TRAINING_SETTINGS:
        if key not in FIXED_ON_RESUME and getattr(args, key, None) is not None \
                and key in saved and saved[key] != settings[key]:
            lines.append(f"resume: {_flag(key)} {settings[key]} replaces the checkpoint's "
                         f"{saved[key]}")
    progress = state["progress"]
    done, batch = int(progress["epoch"]), int(progress["batch"])
    if settings["epochs"] < done + (1 if batch else 0) or (settings["epochs"] == done and not batch):
        raise CliError(f"checkpoint {args.resume} has already trained "
                       f"{_count(done, 'epoch', 'epochs')}" + (f" and {batch} batches" if batch else "")
                       + f"; give --epochs above {done} to train further (or --eval-only "
                       "to evaluate it)")
    return lines


def start_distributed():
    """Join the MPI job (``mpirun -np N ...``); ranks other than 0 print nothing on stdout."""
    try:
        from minicnn import distributed
        communicator = distributed.init()
    except ImportError as error:
        raise CliError(str(error)) from None
    if not communicator.is_main_process:
        sys.stdout = open(os.devnull, "w")


def main(family=None, argv=None):
    """Run the command line for ``family`` (detected when None) on ``argv`` (default
    ``sys.argv[1:]``). The one place where failures become what a user sees: an expected
    one is one line and exit status 2, an interruption one line and 130 (143 for
    SIGTERM), anything else a bug report, with the traceback only under ``--debug``."""
    program = argv is None           # the real program, not a test calling in-process
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    family = family or detect_family()
    if program and _main_thread():   # replaces the start-up handlers of architectures/__init__
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if hasattr(signal, "SIGTERM"):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with _terminate_as_interrupt():
            return run(family, argv)
    except KeyboardInterrupt:        # Ctrl-C outside training (start-up, data loading)
        failure = Interrupted("interrupted")
    except TerminatedError:
        failure = Interrupted("terminated (SIGTERM)", status=128 + signal.SIGTERM)
    except Exception as error:
        failure = expected_failure(error)
        if failure is None:
            failure = _bug(error, debug)
    _finish(family, failure, program)


class TerminatedError(Exception):
    """SIGTERM outside training (where it asks the loop to stop and save)."""


class _terminate_as_interrupt:
    """SIGTERM ends the command like Ctrl-C, with one line (its default is a silent kill)."""

    def __enter__(self):
        self.previous = None
        if hasattr(signal, "SIGTERM") and _main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)

    @staticmethod
    def _raise(signum, frame):
        raise TerminatedError

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def _main_thread():
    import threading
    return threading.current_thread() is threading.main_thread()


def expected_failure(error):
    """The one-line CliError for a failure a user can cause and fix, or None."""
    from minicnn.data.dataset import DatasetError
    from minicnn.train import TrainingDiverged
    if isinstance(error, CliError):
        return error
    if isinstance(error, (DatasetError, TrainingDiverged)):
        return CliError(str(error).splitlines()[0] if isinstance(error, TrainingDiverged)
                        else " ".join(str(error).split("\n")))
    if isinstance(error, MemoryError):
        return CliError("out of memory: try a smaller --batch-size or --input-size")
    if isinstance(error, OSError) and error.filename is not None:   # disk full, permissions
        return CliError(f"{error.filename}: {error.strerror or error}")
    return None


def _bug(error, debug):
    if debug:
        import traceback
        traceback.print_exception(type(error), error, error.__traceback__)
    hint = "" if debug else " (run again with --debug for the traceback)"
    failure = CliError(f"internal error, a bug in minicnn: {type(error).__name__}: "
                       f"{str(error).splitlines()[0] if str(error) else ''} — please report it "
                       f"with the command line to {REPORT_BUGS}{hint}")
    failure.status = 1
    return failure


def _finish(family, failure, program):
    """Print the one line and exit; a Ctrl-C pressed now cannot interrupt the printing."""
    ignored = {}
    if _main_thread():
        for signum in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
            if signum is not None:
                ignored[signum] = signal.signal(signum, signal.SIG_IGN)
    try:
        print(f"{family}: {failure.prefix}{failure}", file=sys.stderr, flush=True)
    finally:
        if not program:              # in-process callers (tests) get their handlers back
            for signum, previous in ignored.items():
                signal.signal(signum, previous)
    raise SystemExit(failure.status)


if __name__ == "__main__":
    main()
