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

Training as the papers did
--------------------------
``--recipe paper`` applies the family's published recipe (``minicnn.recipes``; explicit
flags still win) and ``--recipe`` alone lists what it sets. The pieces can be used one by
one: ``--randaugment N,M``, ``--mixup ALPHA``, ``--clip-grad NORM``, ``--ema DECAY``,
``--bn-momentum M``, ``--pca-colour``, ``--scale-jitter MIN,MAX``, ``--progressive STAGES``
(EfficientNetV2) and ``--tta none|flip|10crop|dense`` for the evaluation.

Layout
------
``settings``  the tables (defaults, ranges, needs, conflicts), the family, the recipe and
              the merged settings of a run; ``parser`` the options; ``paths`` the files a
              run reads and writes; ``pieces`` datasets, networks, checkpoints and the
              papers' techniques; ``commands`` summary, predict, evaluate, export, train;
              ``main`` the program and what a failure looks like.

Only ``argparse`` and the settings tables are imported before the arguments are parsed,
so ``--help`` is instant; the engine's training loop and the datasets load afterwards.
"""
from minicnn.cli.main import main, run
from minicnn.cli.settings import (BUILTIN_DEFAULTS, RANGES, CliError, detect_family,
                                  family_defaults, family_variants, resolve_settings,
                                  check_optimizer_and_schedule)
from minicnn.cli.paths import PLOT_FILES
from minicnn.cli.pieces import build_model, make_pipeline

__all__ = ["main", "run", "BUILTIN_DEFAULTS", "RANGES", "CliError", "detect_family",
           "family_defaults", "family_variants", "resolve_settings",
           "check_optimizer_and_schedule", "PLOT_FILES", "build_model", "make_pipeline"]
