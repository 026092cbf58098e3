"""Files written whole or not at all, and the leftovers of writes that were killed.

Every file minicnn writes for a user (checkpoints, metrics history, dataset caches) goes
through ``atomic_write``: the bytes go to a temporary file in the destination's folder,
are flushed to disk, and only then does ``os.replace`` (atomic on POSIX and Windows when
both names are on one file system) give them the real name. A crash at any moment leaves
either the old file or the complete new one, never a torn one.

A process killed with ``kill -9`` cannot remove its temporary file. So the temporary's name
says whose it is, ``.NAME.PID-RANDOM.tmp`` (hidden, beside ``NAME``), and
``remove_stale_temporaries(path)`` deletes those of ``path`` whose process is gone: the
next run cleans up after a killed one, and never touches a write still in progress.
"""
import os
import tempfile

SUFFIX = ".tmp"


def _prefix(path):
    return f".{os.path.basename(path)}."


def new_file_mode():
    """The permissions an ordinary new file gets here: 0666 minus the process umask
    (``mkstemp`` makes its files private, 0600, which a checkpoint or cache need not be)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path, write):
    """Create or replace ``path`` atomically; ``write(binary_file)`` fills it. Returns path.

    The folder is created when missing. When ``write`` or anything after it fails (or the
    user presses Ctrl-C), the temporary file is removed and ``path`` is left as it was.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f"{_prefix(path)}{os.getpid()}-",
                                         suffix=SUFFIX, dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())             # the bytes are on disk before the rename
        os.chmod(temporary, new_file_mode())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path


def _process_alive(pid):
    try:
        os.kill(pid, 0)                         # signal 0: only asks whether it exists
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True                             # it exists, as another user's process
    return True


def stale_temporaries(path):
    """The temporaries ``atomic_write`` left beside ``path`` in processes that have died."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    prefix = _prefix(path)
    try:
        names = os.listdir(folder)
    except OSError:                              # no folder yet: nothing to clean
        return []
    stale = []
    for name in names:
        if not (name.startswith(prefix) and name.endswith(SUFFIX)):
            continue
        owner = name[len(prefix):-len(SUFFIX)].split("-", 1)[0]
        # a name without an owner is from a minicnn before owners were recorded: stale
        if not owner.isdigit() or not _process_alive(int(owner)):
            stale.append(os.path.join(folder, name))
    return stale


def remove_stale_temporaries(*paths):
    """Delete what ``stale_temporaries`` finds for each path; returns the deleted paths."""
    removed = []
    for path in paths:
        for temporary in stale_temporaries(path):
            try:
                os.remove(temporary)
                removed.append(temporary)
            except FileNotFoundError:           # another run cleaned it first
                pass
    return removed
