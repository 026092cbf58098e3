"""Processes that work together: MPI through mpi4py, with a deadline on every wait.

MPI in four sentences
---------------------
``mpirun -np P python program.py`` starts P copies of the same program. Each copy (a
*rank*, numbered 0 … P−1) runs on its own, and they meet only in *collective* calls —
every rank calls ``Allreduce`` and every rank gets the element-wise sum of what all ranks
gave — and in *point-to-point* messages (``Send``/``Recv``, ``Sendrecv``). That is the
whole model; everything in ``minicnn.distributed`` is built from five such calls:
``Allreduce`` (average gradients), ``Bcast`` (give every rank rank 0's weights),
``Allgather`` (batch-norm statistics), ``Sendrecv`` (the AlexNet towers' activations) and
``Barrier`` (wait for each other).

Launching
---------
On one machine::

    mpirun -np 2 python -m architectures.lenet5 --train mnist --distributed

Across machines, nothing in the program changes; the launcher is told where to start the
ranks. With MPICH's launcher (Hydra, which the ``mpich`` wheel installs as ``mpirun``),
write a *hostfile*, one machine per line with how many ranks it takes::

    # hosts.txt
    node1:2
    node2:2

and run ``mpirun -f hosts.txt -np 4 python -m architectures.lenet5 --train mnist
--distributed``. Every machine needs the same Python environment and the data at the same
path (or a shared file system), and password-less ``ssh`` from the launching machine to
the others (Hydra starts the remote ranks over ssh; ``-launcher slurm`` etc. for a batch
system). Ranks on different machines then talk over the network (TCP, or InfiniBand
through the UCX or libfabric layer the wheel is built with, when the machines have it);
ranks on one machine through shared memory. ``-iface eth1`` picks the network interface
when a machine has several.

Threads
-------
P ranks on one machine share its cores. ``init`` gives each rank ``cores / (ranks on this
machine)`` Numba threads unless ``NUMBA_NUM_THREADS`` is set. NumPy's BLAS reads its
thread count once, when NumPy loads, so set it on the command line:
``mpirun -np 2 -genv OMP_NUM_THREADS 1 -genv OPENBLAS_NUM_THREADS 1 ...``.

When a rank dies: a bounded wait, and a clear error
---------------------------------------------------
A collective cannot finish while one of its ranks is missing, and plain MPI waits for it
forever. Four things keep a failure from becoming a silent hang here; what follows was
checked with the ``mpich`` 5.0 wheel:

1. **A rank that is killed** (a crash, ``os._exit``, the out-of-memory killer): Hydra,
   MPICH's launcher, kills every other rank within about a second (SIGKILL, so they print
   nothing) and ``mpirun`` exits with the dead rank's exit status. Launched with
   ``mpirun -disable-auto-cleanup``, the others live on, and point 4 ends them.
2. **A Python exception on one rank**: ``init`` installs an ``excepthook`` that prints the
   traceback with the rank's number and calls ``MPI_Abort``, which ends every rank at once
   (otherwise the others would wait in their next collective for a rank that is gone).
3. **A rank whose program ends early, in order** (``sys.exit`` after an error message):
   it runs ``MPI_Finalize`` and waits there, alive, so the launcher sees nothing wrong.
   As its interpreter exits it sends every other rank a goodbye, and a rank waiting for
   it fails at once: "rank 1 has left the job while this rank waited for …"
   (``Communicator.watch_departures``).
4. **A rank that hangs, or is gone without anyone noticing**: every wait in this package
   is a non-blocking call (``Iallreduce``, ``Ibcast``, ``Isend`` …) polled with ``Test``
   until a deadline, ``timeout`` seconds (``MINICNN_DIST_TIMEOUT``, default 300). Past it,
   ``DistributedTimeout`` names the operation and the rank, and point 2 aborts the job.
   Polling also keeps a waiting rank from spinning a core at 100 % the way a blocking MPI
   call does, which matters when ranks share a machine's cores. (The only blocking calls
   are the set-up inside ``init``, before any training.)

Without MPI
-----------
``SingleProcess`` has the same methods for one rank (every collective is the identity),
so code written for ``Communicator`` runs unchanged without mpi4py or ``mpirun``.
"""
import atexit
import contextlib
import os
import sys
import time

import numpy as np

from minicnn.backend import device_of, get_array_module, to_device

DEFAULT_TIMEOUT = 300.0          # seconds a rank waits for the others before giving up
TIMEOUT_VARIABLE = "MINICNN_DIST_TIMEOUT"
SPIN_SECONDS = 1e-3              # poll without sleeping this long: short waits stay fast
LONGEST_NAP = 1e-3               # then sleep between polls, doubling up to this
LEAVING_GRACE = 1.0              # seconds an operation may still finish after a rank left
GOODBYE_TAG = 7
ABORT_OUTPUT_PAUSE = 0.5         # seconds for the launcher to forward a failing rank's message
INSTALL_HINT = "pip install 'minicnn[distributed]' (mpi4py and the mpich wheel)"


class DistributedError(RuntimeError):
    """A collective or message could not be completed."""


class DistributedTimeout(DistributedError):
    """The other ranks did not join an operation before the deadline."""


def default_timeout():
    """``MINICNN_DIST_TIMEOUT`` seconds if set (a positive number), else ``DEFAULT_TIMEOUT``."""
    text = os.environ.get(TIMEOUT_VARIABLE)
    if text is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{TIMEOUT_VARIABLE} must be a positive number of seconds, got {text!r}")
    return value


def mpi_module():
    """``mpi4py.MPI`` (importing it initializes MPI), or a clear ImportError."""
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(f"minicnn.distributed needs mpi4py: {INSTALL_HINT} ({error})") from None
    return MPI


def _host_buffer(array):
    """A contiguous NumPy array MPI can read and write: ``array`` itself when it is one.

    MPI here moves host memory; a CuPy array is staged through the host (gradients on
    GPUs go through NCCL instead, see ``minicnn.distributed.nccl``).
    """
    if device_of(array) == "gpu":
        return np.ascontiguousarray(to_device(array, "cpu"))
    if not array.flags.c_contiguous:
        raise ValueError(f"MPI buffers must be C-contiguous arrays, got one with strides "
                         f"{array.strides} for shape {array.shape}")
    return array


def _copy_back(host, array):
    """After staging: put the host result into ``array`` (a no-op when it is ``host``)."""
    if host is not array:
        array[...] = get_array_module(array).asarray(host)


class Communicator:
    """A group of MPI ranks and the operations minicnn needs, each with a deadline.

    ``rank``/``size`` say who this process is; ``allreduce_``, ``broadcast_``,
    ``allgather``, ``sendrecv`` and ``barrier`` are the collectives and messages, and every
    one of them waits at most ``timeout`` seconds (see the module doc). Arrays are NumPy
    (CuPy arrays are staged through the host). Methods ending in ``_`` work in place.
    """

    def __init__(self, mpi_comm=None, timeout=None):
        self.MPI = mpi_module()
        self.comm = mpi_comm if mpi_comm is not None else self.MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.local_rank, self.local_size = self.rank, self.size   # until init() knows better
        self.timeout = default_timeout() if timeout is None else float(timeout)
        if not self.timeout > 0:
            raise ValueError(f"Communicator: timeout must be a positive number of seconds, "
                             f"got {timeout!r}")

    def __repr__(self):
        return f"Communicator(rank={self.rank}, size={self.size}, timeout={self.timeout:g} s)"

    @property
    def is_main_process(self):
        """Rank 0: the one that prints and writes files."""
        return self.rank == 0

    # -- waiting -----------------------------------------------------------------------
    def wait(self, requests, what, timeout=None):
        """Poll ``requests`` until all complete; DistributedTimeout after ``timeout`` s,
        DistributedError as soon as another rank is known to have left the job.

        Spins for the first millisecond (a collective between ranks in step usually
        finishes in less), then sleeps between polls, so a rank waiting for a slow one
        leaves the core to it. MPI makes progress inside ``Test``, so polling is what
        moves the data, not only what notices the end.
        """
        requests = list(requests)
        timeout = self.timeout if timeout is None else timeout
        started = time.monotonic()
        nap = 1e-4
        while not self.MPI.Request.Testall(requests):
            waited = time.monotonic() - started
            if self._someone_left() and waited > LEAVING_GRACE:
                raise DistributedError(
                    f"rank {self.rank} of {self.size}: rank {self.departed} has left the job "
                    f"(its program ended or exited with an error) while this rank waited "
                    f"for {what}")
            if waited > timeout:
                raise DistributedTimeout(
                    f"rank {self.rank} of {self.size}: {what} did not complete within "
                    f"{timeout:g} s; another rank has died, hangs, or is far behind (set "
                    f"{TIMEOUT_VARIABLE} to wait longer)")
            if waited > SPIN_SECONDS:
                time.sleep(nap)
                nap = min(2 * nap, LONGEST_NAP)

    # -- noticing a rank that leaves ------------------------------------------------------
    def watch_departures(self):
        """Listen for the message a rank sends as its program ends (``_say_goodbye``).

        A rank that ends early — ``sys.exit`` after an error, say — runs MPI_Finalize and
        waits there, alive, so the launcher sees nothing wrong, while the others wait for
        it in their next collective. So each rank, as its interpreter exits, sends every
        other rank a word on a communicator of its own (a duplicate of the job's, so it
        never mixes with the program's messages); ``wait`` checks for one at each poll
        and fails at once (after ``LEAVING_GRACE`` seconds, time for an operation the
        leaver did finish to complete here too). At a normal end every rank leaves
        after its last collective, so nobody is waiting to notice.
        """
        self.departures = self.comm.Dup()
        self._goodbye = np.zeros(1, dtype=np.int64)
        self._listening = self.departures.Irecv(self._goodbye, source=self.MPI.ANY_SOURCE,
                                                tag=GOODBYE_TAG)
        atexit.register(self._say_goodbye)

    departed = None
    _listening = None

    def _someone_left(self):
        if self.departed is None and self._listening is not None:
            status = self.MPI.Status()
            if self._listening.Test(status):
                self.departed, self._listening = status.Get_source(), None
        return self.departed is not None

    def _say_goodbye(self):
        try:
            if self.MPI.Is_finalized():
                return
            if self._listening is not None:
                self._listening.Cancel()
                self._listening.Wait()
                self._listening = None
            word = np.ones(1, dtype=np.int64)
            sends = [self.departures.Isend(word, dest=r, tag=GOODBYE_TAG)
                     for r in range(self.size) if r != self.rank]
            deadline = time.monotonic() + LEAVING_GRACE
            while not self.MPI.Request.Testall(sends) and time.monotonic() < deadline:
                time.sleep(1e-3)
        except Exception:   # leaving anyway: a failed goodbye must not mask the exit status
            pass

    # -- collectives -----------------------------------------------------------------
    def allreduce_(self, array, op="sum", what="allreduce", timeout=None):
        """Replace ``array`` on every rank by the element-wise sum (or max/min) over ranks."""
        operations = {"sum": self.MPI.SUM, "max": self.MPI.MAX, "min": self.MPI.MIN}
        if op not in operations:
            raise ValueError(f"allreduce_: op must be one of {sorted(operations)}, got {op!r}")
        host = _host_buffer(array)
        self.wait([self.comm.Iallreduce(self.MPI.IN_PLACE, host, op=operations[op])], what,
                  timeout)
        _copy_back(host, array)
        return array

    def allreduce_many_(self, arrays, what="allreduce", timeout=None):
        """``allreduce_`` (sum) of several arrays, all posted before waiting for any, so the
        transfers of one overlap the reduction of another."""
        hosts = [_host_buffer(a) for a in arrays]
        requests = [self.comm.Iallreduce(self.MPI.IN_PLACE, h, op=self.MPI.SUM) for h in hosts]
        self.wait(requests, what, timeout)
        for host, array in zip(hosts, arrays):
            _copy_back(host, array)
        return arrays

    def broadcast_(self, array, root=0, what="broadcast", timeout=None):
        """Overwrite ``array`` on every rank with the one on ``root``."""
        host = _host_buffer(array)
        self.wait([self.comm.Ibcast(host, root=root)], what, timeout)
        _copy_back(host, array)
        return array

    def allgather(self, array, what="allgather", timeout=None):
        """Every rank's ``array`` (same shape and dtype everywhere), stacked: (size, *shape)."""
        host = np.ascontiguousarray(_host_buffer(array))
        gathered = np.empty((self.size,) + host.shape, dtype=host.dtype)
        self.wait([self.comm.Iallgather(host, gathered)], what, timeout)
        return get_array_module(array).asarray(gathered)

    def barrier(self, what="barrier", timeout=None):
        """Return once every rank has called ``barrier``."""
        self.wait([self.comm.Ibarrier()], what, timeout)

    def broadcast_object(self, value, root=0, what="broadcast of a Python object"):
        """``root``'s picklable ``value`` on every rank (small things: settings, ids)."""
        payload = np.frombuffer(_pickle(value), dtype=np.uint8) if self.rank == root else None
        length = np.array([0 if payload is None else payload.size], dtype=np.int64)
        self.broadcast_(length, root, what)
        buffer = payload.copy() if payload is not None else np.empty(int(length[0]), np.uint8)
        self.broadcast_(buffer, root, what)
        return _unpickle(buffer.tobytes())

    # -- messages ----------------------------------------------------------------------
    def sendrecv(self, send, dest, receive, source, what="sendrecv", tag=0, timeout=None):
        """Send ``send`` to rank ``dest`` while receiving into ``receive`` from ``source``.

        Both directions are posted before waiting, so two ranks that send to each other
        at the same time cannot deadlock (each blocking ``Send`` could wait for the other's
        ``Recv``). Returns ``receive``.
        """
        out = _host_buffer(send if device_of(send) == "gpu" else np.ascontiguousarray(send))
        host = _host_buffer(receive)
        requests = [self.comm.Irecv(host, source=source, tag=tag),
                    self.comm.Isend(out, dest=dest, tag=tag)]
        self.wait(requests, what, timeout)
        _copy_back(host, receive)
        return receive

    # -- the end -----------------------------------------------------------------------
    def abort(self, code=1):
        """End every rank of the job now (``MPI_Abort``)."""
        self.comm.Abort(code)


class SingleProcess:
    """The ``Communicator`` interface for one process: every collective is the identity.

    Lets data-parallel code run without MPI (``size == 1``), and is what
    ``minicnn.distributed.world()`` returns before ``init``.
    """
    rank, size, local_rank, local_size, timeout = 0, 1, 0, 1, float("inf")
    is_main_process = True

    def __repr__(self):
        return "SingleProcess()"

    def wait(self, requests, what, timeout=None):
        return None

    def allreduce_(self, array, op="sum", what="allreduce", timeout=None):
        return array

    def allreduce_many_(self, arrays, what="allreduce", timeout=None):
        return arrays

    def broadcast_(self, array, root=0, what="broadcast", timeout=None):
        return array

    def allgather(self, array, what="allgather", timeout=None):
        return get_array_module(array).asarray(array)[None]

    def barrier(self, what="barrier", timeout=None):
        return None

    def broadcast_object(self, value, root=0, what="broadcast of a Python object"):
        return value

    def sendrecv(self, send, dest, receive, source, what="sendrecv", tag=0, timeout=None):
        if dest != 0 or source != 0:
            raise ValueError(f"sendrecv: a single process can only message itself (rank 0), "
                             f"got dest={dest}, source={source}")
        receive[...] = send
        return receive

    def abort(self, code=1):
        os._exit(code)


def _pickle(value):
    import pickle
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _unpickle(data):
    import pickle
    return pickle.loads(data)


# ----------------------------------------------------------------------------- the world

_world = SingleProcess()
_initialized = False


def init(timeout=None, abort_on_exception=True, share_cores=True):
    """Join the MPI job this process was started in; returns the world ``Communicator``.

    Safe to call again (returns the same communicator). ``timeout`` is the deadline of
    every wait (default ``MINICNN_DIST_TIMEOUT`` or 300 s). With ``abort_on_exception`` an
    uncaught exception on any rank ends the whole job (see the module doc). With
    ``share_cores`` the ranks on one machine split its cores between their Numba thread
    pools. Started without ``mpirun``, this process is a job of one rank.
    """
    global _world, _initialized
    if _initialized:
        return _world
    _world = Communicator(timeout=timeout)
    _initialized = True
    _find_neighbours(_world)
    if _world.size > 1:
        _world.watch_departures()
    if abort_on_exception:
        _abort_on_uncaught_exception(_world)
    if share_cores:
        _share_cores(_world)
    return _world


def world():
    """The communicator of this process: the MPI world after ``init``, else one process."""
    return _world


def is_initialized():
    return _initialized


def rank():
    return _world.rank


def size():
    return _world.size


def is_main_process():
    """True on rank 0 (and in a process that is not part of an MPI job)."""
    return _world.rank == 0


@contextlib.contextmanager
def main_process_first(communicator=None, timeout=3600.0):
    """Rank 0 runs the block first, then the other ranks (e.g. rank 0 downloads and caches
    a dataset, the others then read the cache). A no-op in a single process.
    ``timeout`` bounds the others' wait (downloads can be slow)."""
    communicator = communicator or _world
    if not communicator.is_main_process:
        communicator.barrier("waiting for rank 0 to finish first", timeout)
    yield
    if communicator.is_main_process:
        communicator.barrier("waiting for rank 0 to finish first", timeout)


def _abort_on_uncaught_exception(communicator):
    """Make an uncaught exception on one rank end every rank, with the rank in the message."""
    previous = sys.excepthook

    def report_and_abort(kind, value, traceback):
        try:
            previous(kind, value, traceback)
            sys.stderr.write(f"minicnn.distributed: rank {communicator.rank} of "
                             f"{communicator.size} stopped with {kind.__name__}; aborting "
                             f"every rank\n")
            sys.stderr.flush()
            sys.stdout.flush()
            # The launcher forwards a rank's output through a pipe to its proxy; MPI_Abort
            # kills the proxies at once, and without this pause the end of the message
            # (the part that says why) can be lost on a busy machine.
            time.sleep(ABORT_OUTPUT_PAUSE)
        finally:
            if communicator.size > 1:
                communicator.abort(1)

    sys.excepthook = report_and_abort


def _find_neighbours(communicator):
    """Set ``local_rank``/``local_size``: this rank's place among the ranks of its machine
    (MPI's shared-memory split), which picks its GPU and its share of the cores."""
    MPI = communicator.MPI
    local = communicator.comm.Split_type(MPI.COMM_TYPE_SHARED, communicator.rank)
    communicator.local_rank, communicator.local_size = local.Get_rank(), local.Get_size()
    local.Free()


def _share_cores(communicator):
    """Give each rank on a machine an even share of its cores for Numba's threads."""
    if "NUMBA_NUM_THREADS" in os.environ or communicator.local_size == 1:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        import numba
        numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS,
                                         (cores or 1) // communicator.local_size)))
    except ImportError:
        pass
