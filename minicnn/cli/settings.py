"""What a command line asks for, checked: the tables of defaults, ranges, needs and
conflicts, the family and its defaults, the recipe, and the merged settings of a run.

Nothing here imports NumPy's users (the engine, the datasets): ``--help`` and a refused
command line stay instant.
"""
import argparse
import math
import os
import sys

BUILTIN_DEFAULTS = {
    "epochs": 10, "batch_size": 128, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9,
    "weight_decay": 0.0, "schedule": "cosine", "label_smoothing": 0.0, "seed": 0,
    "device": "cpu", "input_size": None, "limit_train": None, "augment": None,
    "optimizer_options": {},
    # the papers' techniques (issue 18); None or False: not used
    "randaugment": None, "mixup": None, "clip_grad": None, "ema": None, "bn_momentum": None,
    "pca_colour": False, "scale_jitter": None, "progressive": None, "progressive_size": None,
    "tta": "none",
}


# The settings a checkpoint records and a resumed run takes back.
TRAINING_SETTINGS = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay",
                     "schedule", "label_smoothing", "seed", "input_size", "limit_train",
                     "augment", "optimizer_options", "randaugment", "mixup", "clip_grad",
                     "ema", "bn_momentum", "pca_colour", "scale_jitter", "progressive",
                     "progressive_size")


# What a resumed run cannot change, and why: they decide which batch comes next.
FIXED_ON_RESUME = {
    "batch_size": "the saved position inside the epoch is counted in its batches",
    "seed": "it decides the order and augmentation of every epoch",
    "limit_train": "it decides which images are trained on",
    "input_size": "the network and its preprocessing were set up for it",
    "optimizer": "the saved optimizer state (momentum, moments) belongs to it",
}


REPORT_BUGS = "the minicnn issue tracker"
DEBUG_ENV = "MINICNN_DEBUG"
DATASET_AUGMENT = {"mnist": "none", "cifar10": "crop-flip"}   # a folder of photos: "flip"


AUGMENTATIONS = ("none", "translate", "crop-flip", "flip")      # minicnn.data.transforms


class CliError(Exception):
    """Bad input or an expected failure: one line on stderr, exit status ``status``."""
    status, prefix = 2, "error: "


class Interrupted(CliError):
    """Ctrl-C or SIGTERM: one line, exit status 128 + the signal's number."""
    prefix = ""

    def __init__(self, message, status=130):
        super().__init__(message)
        self.status = status


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


MAX_MAGNITUDE = 30     # minicnn.data.augment.MAX_MAGNITUDE (not imported: it loads NumPy)


class NumberPair:
    """Two numbers written ``A,B`` (``--randaugment 2,9``, ``--scale-jitter 256,512``), each
    with its own ``NumberRange``; ``ordered``: the first may not exceed the second (a
    minimum and a maximum)."""

    def __init__(self, first, second, ordered=False):
        (self.first_name, self.first), (self.second_name, self.second) = first, second
        self.ordered = ordered

    def describe(self):
        order = f", the {self.first_name} at most the {self.second_name}" if self.ordered else ""
        return (f"A,B with A (the {self.first_name}) {self.first.describe()} and B (the "
                f"{self.second_name}) {self.second.describe()}{order}")

    def contains(self, value):
        return (isinstance(value, (tuple, list)) and len(value) == 2
                and self.first.contains(value[0]) and self.second.contains(value[1])
                and not (self.ordered and value[0] > value[1]))

    check = NumberRange.check     # a value from a checkpoint or a recipe, checked alike

    def __call__(self, text):
        parts = text.split(",")
        try:
            value = (self.first(parts[0]), self.second(parts[1])) if len(parts) == 2 else None
        except argparse.ArgumentTypeError:
            value = None
        if value is None or not self.contains(value):
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}")
        return value


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
    "mixup": NumberRange(float, 0, 100, low_open=True),
    "clip_grad": NumberRange(float, 0, 1e6, low_open=True),
    "ema": NumberRange(float, 0, 1, low_open=True, high_open=True),
    "bn_momentum": NumberRange(float, 0, 1, low_open=True),
    "progressive": NumberRange(int, 1, 100),
    "randaugment": NumberPair(("operations", NumberRange(int, 0, 14)),
                              ("magnitude", NumberRange(float, 0, MAX_MAGNITUDE))),
    "scale_jitter": NumberPair(("smallest side", NumberRange(int, 1, 4096)),
                               ("largest side", NumberRange(int, 1, 4096)), ordered=True),
    "progressive_size": NumberPair(("first size", NumberRange(int, 1, 4096)),
                                   ("last size", NumberRange(int, 1, 4096)), ordered=True),
}


# (option, the option it needs, why): given without it, it would be silently ignored
NEEDS = (
    ("sync_bn", "distributed", "synchronized batch norm is across the ranks of --distributed"),
    ("measure", "summary", "it measures the step that --summary describes"),
    ("progressive_size", "progressive", "it gives the image sizes of --progressive's stages"),
)


# pairs that contradict each other
CONFLICTS = (
    ("eval_only", "predict", "give one of them"),
    ("resume", "finetune", "--resume continues a run, --finetune starts a new one from "
                           "its weights"),
    ("weights", "resume", "--weights starts from pretrained weights, --resume continues a "
                          "run"),
    ("weights", "finetune", "give one set of starting weights"),
    ("mixup", "progressive", "the stages of --progressive set mixup's α themselves"),
)


# options that only a training run uses
TRAINING_ONLY = ("epochs", "lr", "optimizer", "momentum", "weight_decay", "schedule",
                 "label_smoothing", "augment", "limit_train", "save", "overwrite", "plot",
                 "finetune", "freeze", "distributed", "sync_bn", "recipe", "randaugment",
                 "mixup", "clip_grad", "ema", "bn_momentum", "pca_colour", "scale_jitter",
                 "progressive", "progressive_size")


def option_flag(key):
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
            raise CliError(f"{option_flag(key)} needs {option_flag(needed)}: {why}")
    for first, second, why in CONFLICTS:
        if _given(args, first) and _given(args, second):
            raise CliError(f"{option_flag(first)} and {option_flag(second)} do not go "
                           f"together: {why}")
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
                raise CliError(f"{option_flag(key)} only applies to training (--train DATASET or "
                               f"--resume CHECKPOINT), not to {doing}")
    if _given(args, "tta") and args.tta != "none" and (args.predict or args.summary) \
            and not (args.eval_only or args.train):
        raise CliError("--tta applies to evaluation (--eval-only, or the test set after "
                       "--train), not to " + ("--predict" if args.predict else "--summary"))
    if using_checkpoint and args.input_size is not None:
        raise CliError("--input-size cannot change a trained checkpoint's input size under "
                       f"{'--eval-only' if args.eval_only else '--predict'}")


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


FREEZE_HELP = "none, backbone (train only the head) or all-but-last-N"


def freeze_spec(text):
    """argparse's ``type`` for --freeze: ``none``, ``backbone`` or ``all-but-last-N`` (N a
    whole number from 1; the network, once built, bounds it from above). Returns the text;
    ``apply_freeze_spec`` (``minicnn.cli.model``) acts on it with ``minicnn.nn``'s
    freezing."""
    if text in ("none", "backbone") or freeze_last_count(text) is not None:
        return text
    raise argparse.ArgumentTypeError(f"expected {FREEZE_HELP} (N at least 1), got {text!r}")


def freeze_last_count(text):
    """N of ``all-but-last-N``, or None when ``text`` is not of that form."""
    prefix = "all-but-last-"
    count = text[len(prefix):] if text.startswith(prefix) else ""
    return int(count) if count.isdigit() and int(count) >= 1 else None


def resolve_settings(defaults, args, variant, dataset, saved=None, recipe=None):
    """Merge defaults, per-dataset and per-variant overrides, the paper's recipe
    (``recipe``: a ``minicnn.recipes.Recipe``, scaled to the run's epochs and batch size),
    a resumed checkpoint's settings and the command line, in that order of increasing
    priority."""
    settings = _merge(defaults, args, variant, dataset, saved)
    if recipe is not None:
        from_recipe = recipe_settings(recipe, settings["epochs"], settings["batch_size"])
        settings = _merge(defaults, args, variant, dataset, saved, from_recipe)
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


def _merge(defaults, args, variant, dataset, saved, from_recipe=None):
    settings = {key: defaults.get(key, BUILTIN_DEFAULTS[key]) for key in BUILTIN_DEFAULTS}
    for layer in (defaults.get("datasets", {}).get(dataset, {}),
                  defaults.get("variants", {}).get(variant, {}),
                  from_recipe or {}, saved or {}):
        settings.update({k: v for k, v in layer.items() if k in BUILTIN_DEFAULTS})
    for key in BUILTIN_DEFAULTS:
        value = getattr(args, key, None)
        if value is not None and value is not False:
            settings[key] = value
    return settings


# ----------------------------------------------------------------------------- recipes

RECIPE_NAMES = ("paper",)       # --recipe NAME; the family decides which paper
LIST_RECIPE = "list"            # --recipe with no name: show what it sets


def family_recipe(family, name):
    """The ``minicnn.recipes`` recipe ``name`` of ``family``, or one line saying why not."""
    if name not in RECIPE_NAMES:
        raise CliError(f"unknown recipe {name!r}; the recipes are: {', '.join(RECIPE_NAMES)} "
                       "(--recipe alone lists what it sets)")
    from minicnn import recipes
    try:
        return recipes.recipe(family)
    except ValueError as error:
        raise CliError(f"--recipe {name}: {error}") from None


def recipe_settings(recipe, epochs, batch_size):
    """The settings of this command line that the paper's recipe sets, for a run of
    ``epochs`` epochs at ``batch_size`` (``Recipe.settings`` scales it), by option name.
    What the command line cannot set (an architecture's dropout, an augmentation named in
    words) is left out: ``describe_recipe`` says so."""
    values = recipe.settings(epochs, batch_size)
    settings = {key: values[key] for key in ("optimizer", "lr", "momentum", "weight_decay",
                                             "schedule", "label_smoothing") if key in values}
    if "rmsprop_decay" in values or "rmsprop_eps" in values:
        settings["optimizer_options"] = {"rmsprop": {
            k: values[f"rmsprop_{v}"] for k, v in (("alpha", "decay"), ("eps", "eps"))
            if f"rmsprop_{v}" in values}}
    if values.get("nesterov"):
        settings["optimizer_options"] = {"sgd": {"nesterov": True}}
    for paper_key, key in (("clip_grad_norm", "clip_grad"), ("bn_momentum", "bn_momentum"),
                           ("ema_decay", "ema")):
        if values.get(paper_key):
            settings[key] = values[paper_key]
    augment = str(values.get("augment", ""))
    for name in AUGMENTATIONS:
        if augment.split(" ")[0] == name:
            settings["augment"] = name
    if "PCA colour" in augment:
        settings["pca_colour"] = True
    test = str(values.get("test", ""))
    if test in ("flip", "10crop"):
        settings["tta"] = test
    elif test.startswith("dense"):                  # VGG: "dense, Q ∈ {256, 384, 512}, flips"
        settings["tta"] = "dense"
    return settings


def describe_recipe(family, recipe, epochs, batch_size):
    """``--recipe`` alone: the paper's values, and the settings they become here."""
    applied = recipe_settings(recipe, epochs, batch_size)
    lines = [recipe.describe(family), "",
             f"--recipe paper sets, for {counted(epochs, 'epoch', 'epochs')} at batch "
             f"{batch_size} (explicit flags still win):"]
    lines += [f"  {option_flag(key)} {value}" for key, value in applied.items()]
    return "\n".join(lines)


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
            lines.append(f"note: {option_flag(key)} {given} ignored: a resumed run keeps "
                         f"{was} ({why}); to change it, start a new run with --finetune "
                         f"{args.resume}")
        settings[key] = saved.get(key, settings[key])
    for key in TRAINING_SETTINGS:
        if key not in FIXED_ON_RESUME and getattr(args, key, None) is not None \
                and key in saved and saved[key] != settings[key]:
            lines.append(f"resume: {option_flag(key)} {settings[key]} replaces the checkpoint's "
                         f"{saved[key]}")
    progress = state["progress"]
    done, batch = int(progress["epoch"]), int(progress["batch"])
    if settings["epochs"] < done + (1 if batch else 0) \
            or (settings["epochs"] == done and not batch):
        raise CliError(f"checkpoint {args.resume} has already trained "
                       f"{counted(done, 'epoch', 'epochs')}"
                       + (f" and {batch} batches" if batch else "")
                       + f"; give --epochs above {done} to train further (or --eval-only "
                       "to evaluate it)")
    return lines


def optimizer_options(settings):
    """The extra constructor arguments declared for the chosen optimizer (if any)."""
    return dict((settings["optimizer_options"] or {}).get(settings["optimizer"], {}))


def check_optimizer_and_schedule(settings):
    """Build the optimizer and schedule once on a stand-in parameter, so that a typo in
    --schedule or a bad optimizer option is reported before any data is loaded."""
    import numpy as np
    from minicnn.nn import Parameter
    from minicnn.schedules import make_schedule
    from minicnn.train import make_optimizer
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


def say(message):
    """A line for the user that is not a result: on stderr, at once."""
    print(message, file=sys.stderr, flush=True)


def counted(number, singular, plural):
    return f"{number:,} {singular if number == 1 else plural}"

