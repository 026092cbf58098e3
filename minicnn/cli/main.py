"""The program: parse, check, choose the command, and turn every failure into what a
user should see (one line; a bug report only for a bug)."""
import os
import signal
import sys
import time

from minicnn.cli import commands, pieces
from minicnn.cli.parser import build_parser
from minicnn.cli.paths import check_inputs, check_outputs, check_plot_folder, choose_checkpoint
from minicnn.cli.settings import (DEBUG_ENV, LIST_RECIPE, REPORT_BUGS, CliError, Interrupted,
                                  check_device, check_optimizer_and_schedule,
                                  check_option_combinations, dataset_name, dataset_tag,
                                  describe_recipe, detect_family, exporting_only, family_defaults,
                                  family_recipe, family_variants, reconcile_resume,
                                  resolve_settings, resolve_variant, say)


def run(family, argv):
    """Parse ``argv``, check everything that can be checked without data, then do it."""
    started = time.perf_counter()
    defaults, variants = family_defaults(family), family_variants(family)
    if not variants:
        raise CliError(f"the {family} family registers no architectures")
    args = build_parser(family, defaults, variants).parse_args(argv)
    if args.recipe == LIST_RECIPE and not _has_task(args):
        print(describe_recipe(family, family_recipe(family, "paper"), defaults["epochs"],
                              defaults["batch_size"]))
        return 0
    check_task(args)
    check_option_combinations(args)
    check_inputs(args)
    if args.distributed:
        start_distributed()
    state = pieces.read_checkpoint(args.resume, family, variants) if args.resume else None
    architecture = choose_architecture(family, args, defaults, variants, state)
    saved_dataset = state["meta"].get("dataset") if state is not None else None
    dataset = dataset_name(args.train) if args.train else saved_dataset
    recipe = family_recipe(family, args.recipe) if args.recipe is not None else None
    settings = resolve_settings(defaults, args, architecture, dataset,
                                state["meta"].get("settings") if state is not None else None,
                                recipe)
    check_device(settings["device"])
    training = (args.train or args.resume) and not (args.eval_only or args.predict
                                                     or exporting_only(args))
    if training:
        save, note = check_training(family, architecture, settings, args, state, dataset)
    else:
        check_outputs(args)

    if args.summary and not args.train:
        commands.summary_of_published(architecture, args, settings)
    if args.export_onnx and not training:
        commands.export_trained(architecture, args, state)
    if args.predict and args.weights:
        commands.predict_imagenet(architecture, args.weights, args.predict, settings["device"])
    elif args.predict:
        commands.predict(state, args.predict, settings["device"], args.resume)
    elif args.eval_only and args.weights:
        commands.evaluate_imagenet_folder(architecture, args.weights, args.train, settings)
    elif args.eval_only:
        evaluate_checkpoint(args, state, dataset, saved_dataset, settings)
    elif training:   # --resume alone continues the saved run
        commands.train(family, architecture, dataset, settings, args, state, started, save, note)
    return 0


def _has_task(args):
    return bool(args.train or args.resume or args.summary or args.eval_only or args.predict
                or args.export_onnx)


def check_task(args):
    """There is something to do, and what it needs is given."""
    if not _has_task(args):
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
    if args.recipe == LIST_RECIPE:
        raise CliError("--recipe needs a NAME when training (--recipe paper); --recipe alone "
                       "lists what it sets")


def choose_architecture(family, args, defaults, variants, state):
    """--variant, else the checkpoint's, else the family's default."""
    if args.variant is not None:
        architecture = resolve_variant(family, args.variant, variants)
        if state is not None and state["meta"]["architecture"] != architecture:
            raise CliError(f"checkpoint {args.resume} holds {state['meta']['architecture']}, "
                           f"not {architecture}")
        return architecture
    if state is not None:
        return state["meta"]["architecture"]
    return resolve_variant(family, defaults.get("variant") or variants[0], variants)


def check_training(family, architecture, settings, args, state, dataset):
    """Everything a training run can have wrong, before data: returns where it saves and
    the note to say about it."""
    if state is not None:
        for line in reconcile_resume(settings, state, args):
            say(line)
    check_optimizer_and_schedule(settings)
    input_size = settings["input_size"] or pieces.published_input(architecture)
    pieces.check_scale_jitter(settings, input_size)
    if settings["progressive"]:
        if family not in pieces.PROGRESSIVE_FAMILIES:
            raise CliError(f"--progressive is EfficientNetV2's progressive learning; "
                           f"{family} does not use it")
        pieces.progressive_schedule(settings, architecture, input_size)
    save, note = choose_checkpoint(args, architecture, dataset)
    check_outputs(args, resolved={"save": save})
    check_plot_folder(args)
    return save, note


def evaluate_checkpoint(args, state, dataset, saved_dataset, settings):
    """--eval-only --resume CHECKPOINT: its test set (the one it was trained for)."""
    if dataset != saved_dataset:
        raise CliError(f"checkpoint {args.resume} was trained on {dataset_tag(saved_dataset)}; "
                       f"it cannot be evaluated on {dataset_tag(dataset)}")
    meta = state["meta"]
    _, test = pieces.load_datasets(dataset, args.data_dir, meta["image_size"], meta["channels"],
                                   settings["seed"])
    commands.evaluate_only(state, test, settings, settings["device"], args.resume)


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



