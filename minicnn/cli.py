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
Bad input (an unknown dataset or variant, an input size the network cannot take, a
checkpoint of another architecture, a save path that cannot be written) ends the program
with one line on stderr and exit status 2; no traceback. Ctrl-C during training saves a
checkpoint and exits with status 130.

Only ``argparse`` is imported before the arguments are parsed, so ``--help`` is instant;
NumPy, the engine and the datasets load afterwards.
"""
import argparse
import os
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
DATASET_AUGMENT = {"mnist": "none", "cifar10": "crop-flip"}   # a folder of photos: "flip"
AUGMENTATIONS = ("none", "translate", "crop-flip", "flip")      # minicnn.data.transforms


class CliError(Exception):
    """Bad input: reported as one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # argparse prints usage plus the error; one line is clearer
        raise CliError(f"{message} (see --help)")


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
        "default: the size the variant was published for", type=int, metavar="PIXELS")

    recipe = parser.add_argument_group("training")
    add(recipe, "--epochs", "passes over the training set", type=int, metavar="N")
    add(recipe, "--batch-size", "images per step", type=int, metavar="N")
    add(recipe, "--lr", "learning rate (at its peak, with a schedule)", type=float)
    add(recipe, "--optimizer", "update rule", choices=("sgd", "adam", "adamw", "rmsprop"))
    add(recipe, "--momentum", "momentum of sgd and rmsprop", type=float)
    add(recipe, "--weight-decay", "L2 penalty (decoupled for adamw)", type=float)
    add(recipe, "--schedule", "learning-rate schedule: " + _schedule_help(), metavar="SPEC")
    add(recipe, "--label-smoothing", "label smoothing ε of the cross-entropy "
        "(Szegedy et al. 2016 use 0.1)", type=float, metavar="EPS")
    add(recipe, "--augment", "training augmentation (default: none for mnist, crop-flip for "
        "cifar10, flip for folders)", choices=AUGMENTATIONS)
    add(recipe, "--limit-train", "train on a random subset of N images (quick runs)",
        type=int, metavar="N")
    add(recipe, "--seed", "seed of initialisation, shuffling and augmentation", type=int)

    where = parser.add_argument_group("where")
    add(where, "--device", "run on the CPU (NumPy/Numba) or a CUDA GPU (CuPy)",
        choices=("cpu", "gpu"))
    add(where, "--data-dir", "folder holding (and caching) datasets", metavar="DIR")
    add(where, "--save", "checkpoint written after every epoch (default: "
        "checkpoints/VARIANT-DATASET.npz; metrics go beside it)", metavar="PATH")
    add(where, "--resume", "continue training from (or evaluate, or predict with) this "
        "checkpoint", metavar="PATH")
    add(where, "--distributed", "data-parallel training over the ranks of an MPI job, e.g. "
        "mpirun -np 2 python -m architectures.lenet5 --train mnist --distributed; "
        "--batch-size is per rank; rank 0 prints and saves", action="store_true")
    add(where, "--sync-bn", "with --distributed: batch norm over all ranks' samples "
        "(SyncBatchNorm)", action="store_true")
    see = parser.add_argument_group("seeing inside and transfer")
    add(see, "--measure", "with --summary: also run one real training step at batch N and "
        "show its measured peak memory next to the rule of thumb", type=int, metavar="N")
    add(see, "--plot", "after training, write learning curves, first-layer filters, feature "
        "maps, the confusion matrix and the worst misclassified images as PNGs into DIR",
        metavar="DIR")
    add(see, "--finetune", "start from the weights of this checkpoint (a head of another "
        "size is skipped and reported)", metavar="CHECKPOINT")
    add(see, "--freeze", "with --finetune: none, backbone (train only the head) or "
        "all-but-last-N", metavar="MODE")
    return parser


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
    for key in ("epochs", "batch_size"):
        if settings[key] is None or settings[key] < 1:
            raise CliError(f"--{key.replace('_', '-')} must be at least 1, got {settings[key]}")
    for key in ("lr", "momentum", "weight_decay"):
        if settings[key] < 0:
            raise CliError(f"--{key.replace('_', '-')} must be >= 0, got {settings[key]}")
    if not 0 <= settings["label_smoothing"] < 1:
        raise CliError(f"--label-smoothing must lie in [0, 1), got {settings['label_smoothing']}")
    if settings["limit_train"] is not None and settings["limit_train"] < 1:
        raise CliError(f"--limit-train must be at least 1, got {settings['limit_train']}")
    if settings["input_size"] is not None and settings["input_size"] < 1:
        raise CliError(f"--input-size must be a positive number of pixels, got "
                       f"{settings['input_size']}")
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
    raise CliError(f"unknown dataset {train!r}: use mnist, cifar10, or the path of a folder "
                   "with one sub-folder of images per class")


def dataset_tag(name):
    return os.path.basename(name.rstrip(os.sep)) if os.sep in name else name


def check_writable(path):
    """Fail now, not after an hour of training, if ``path`` cannot be written."""
    import tempfile
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise CliError(f"cannot save to {path}: it is a folder (give a file name such as "
                       f"{os.path.join(path, 'model.npz')})")
    existing = folder                    # the folder may not exist yet: test its nearest
    while not os.path.exists(existing):  # existing ancestor, and create nothing now
        existing = os.path.dirname(existing)
    try:
        if not os.path.isdir(existing):
            raise NotADirectoryError(20, f"{existing} is a file, not a folder")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise CliError(f"cannot write a checkpoint to {path}: {error.strerror or error}") from None


# ----------------------------------------------------------------------------- pieces

def load_datasets(name, data_dir, image_size=32, channels=3, seed=0):
    from minicnn.data import load_dataset
    return load_dataset(name, data_dir=data_dir, image_size=image_size, channels=channels,
                        seed=seed)


def build_model(architecture, num_classes, in_channels, seed):
    import architectures
    from minicnn.nn import init
    import numpy as np
    init.manual_seed(seed)      # the same seed builds the same initial weights
    np.random.seed(seed)
    try:
        return architectures.create(architecture, num_classes=num_classes,
                                    in_channels=in_channels)
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
    return state


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


def predict(state, images, device, top=5):
    """Print the ``top`` most likely classes of each image file."""
    import numpy as np
    from minicnn import functional as F
    from minicnn.backend import to_device
    from minicnn.data.folder import load_image
    from minicnn.tensor import Tensor, no_grad
    from minicnn.train import restore
    meta = state["meta"]
    model = build_model(meta["architecture"], meta["num_classes"], meta["in_channels"], 0)
    restore(state, model)
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


def evaluate_only(state, test, settings, device):
    from minicnn.data.loader import DataLoader
    from minicnn.train import evaluate, restore
    meta = state["meta"]
    model = build_model(meta["architecture"], meta["num_classes"], meta["in_channels"], 0)
    restore(state, model)
    model.to(device)
    loader = DataLoader(test, batch_size=2 * settings["batch_size"],
                        transform=make_pipeline(meta, "none"))
    result = evaluate(model, loader)
    print(f"{meta['architecture']} on {dataset_tag(meta['dataset'])}: test loss "
          f"{result['loss']:.4f}  accuracy {100 * result['accuracy']:.2f}%  top-5 "
          f"{100 * result['top5']:.2f}%  ({len(test):,} images)")
    return result


def train(family, architecture, dataset, settings, args, state, started):
    from minicnn.data.loader import DataLoader
    from minicnn.train import TrainingInterrupted, fit, make_optimizer, make_schedule
    check_device(settings["device"])
    check_recipe(settings)
    save = args.save or args.resume or os.path.join(
        "checkpoints", f"{architecture}-{dataset_tag(dataset)}.npz")
    check_writable(save)
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

    model = build_model(architecture, train_set.num_classes, train_set.channels, settings["seed"])
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
        from minicnn.nn import apply_freeze, load_partial
        try:
            print(load_partial(model, args.finetune))
            frozen = apply_freeze(model, args.freeze or "none")
        except (OSError, ValueError) as error:
            raise CliError(f"--finetune {args.finetune}: {error}") from None
        print(f"frozen ({args.freeze or 'none'}): {_count(len(frozen), 'parameter', 'parameters')}")
    elif args.freeze:
        raise CliError("--freeze needs --finetune CHECKPOINT")

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
    print(f"checkpoint: {save}" + (f" (resuming {args.resume})" if state is not None else ""),
          flush=True)
    try:
        history = fit(model, optimizer, train_loader, test_loader, settings["epochs"],
                      schedule=schedule, label_smoothing=settings["label_smoothing"],
                      checkpoint=save, metadata=meta, resume=state,
                      progress=sys.stderr.isatty(), log=lambda line: print(line, flush=True),
                      distributed=data_parallel)
    except TrainingInterrupted as interrupted:
        _say(f"{interrupted}; continue with --resume {save}")
        raise SystemExit(130) from None
    except FloatingPointError as error:
        _say(f"error: {error}")
        raise SystemExit(1) from None
    except ValueError as error:   # a checkpoint that does not fit this model
        if state is None:
            raise
        raise CliError(f"cannot resume from {args.resume}: {str(error).splitlines()[0]}") from None
    if history and history[-1]["test_accuracy"] is not None:
        last = history[-1]
        print(f"done in {time.perf_counter() - started:.1f} s: test accuracy "
              f"{100 * last['test_accuracy']:.2f}% (top-5 {100 * last['test_top5']:.2f}%), "
              f"checkpoint {save}")
    if args.plot and (data_parallel is None or data_parallel.is_main_process):
        write_plots(args.plot, model, history, test_set, test_loader, test_transform)
    return history


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
    if args.distributed:
        start_distributed()
    if not (args.train or args.resume or args.summary or args.eval_only or args.predict):
        raise CliError("nothing to do: give --train DATASET, --resume CHECKPOINT, --summary, "
                       "--eval-only or --predict IMAGE")

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

    if (args.eval_only or args.predict) and state is None:
        raise CliError(f"--{'eval-only' if args.eval_only else 'predict'} needs a trained "
                       "checkpoint: add --resume PATH")
    check_device(settings["device"])
    if args.summary and not args.train:
        # the network as published: its constructor's own classes and channels
        import inspect
        import architectures
        entry = architectures.entry(architecture)
        parameters = inspect.signature(entry.constructor).parameters
        in_channels = parameters["in_channels"].default if "in_channels" in parameters else 3
        num_classes = parameters["num_classes"].default if "num_classes" in parameters else 1000
        input_size = args.input_size or entry.input_size
        model = build_model(architecture, num_classes, in_channels, settings["seed"])
        probe_input(model, architecture, in_channels, input_size, "cpu")
        show_summary(architecture, model, in_channels, input_size, settings["batch_size"],
                     args.measure)
    if args.predict:
        predict(state, args.predict, settings["device"])
    elif args.eval_only:
        if dataset != saved_dataset:
            raise CliError(f"checkpoint {args.resume} was trained on "
                           f"{dataset_tag(saved_dataset)}; it cannot be evaluated on "
                           f"{dataset_tag(dataset)}")
        meta = state["meta"]
        _, test = load_datasets(dataset, args.data_dir, meta["image_size"], meta["channels"],
                                settings["seed"])
        evaluate_only(state, test, settings, settings["device"])
    elif args.train or args.resume:   # --resume alone continues the saved run
        train(family, architecture, dataset, settings, args, state, started)
    return 0


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
    ``sys.argv[1:]``). Exits with status 2 on bad input, 130 on Ctrl-C."""
    family = family or detect_family()
    try:
        return run(family, argv)
    except CliError as error:
        print(f"{family}: error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"{family}: interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    except Exception as error:   # a dataset that cannot be fetched or read
        from minicnn.data.dataset import DatasetError
        if isinstance(error, DatasetError):
            print(f"{family}: error: {error}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        raise


if __name__ == "__main__":
    main()
