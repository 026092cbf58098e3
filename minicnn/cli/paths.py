"""The paths a command line names: inputs that must exist, outputs that must be
writable (checked before any work), and which checkpoint a run may write."""
import os

from minicnn.cli.settings import CliError, option_flag, dataset_tag

PLOT_FILES = ("learning_curves.png", "filters.png", "feature_maps.png",
              "confusion_matrix.png", "worst_misclassified.png")   # minicnn.plots.write_all


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
        return option_flag(self.key)


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

