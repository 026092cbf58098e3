"""Gradients on GPUs: summed with NCCL through CuPy, without a trip through host memory.

When each rank trains on its own GPU, its gradients live in GPU memory. MPI (the ``mpich``
wheel) moves host memory, so ``Communicator.allreduce_`` would copy every bucket to the
host, reduce it there and copy it back. NVIDIA's NCCL reduces GPU buffers directly, over
NVLink or PCIe inside a machine and over InfiniBand or TCP between machines, with
ring and tree algorithms that keep every link busy. CuPy ships a binding
(``cupy.cuda.nccl``); ``DataParallel`` uses it by itself when the model is on the GPU and
the binding imports. (An MPI built "CUDA-aware" — Open MPI or MVAPICH with CUDA support —
can also take GPU buffers directly; the ``mpich`` wheel is not built that way.)

How a group of NCCL ranks is formed
-----------------------------------
NCCL has no launcher of its own. Rank 0 asks NCCL for a *unique id* (a few hundred bytes
naming the group), MPI broadcasts it, and every rank calls
``NcclCommunicator(size, unique_id, rank)`` on its own GPU. From then on MPI carries the
small things (batch-norm statistics, metrics, the stop flag) and NCCL the gradients.

Which GPU: ``select_device(communicator)`` gives the k-th rank on each machine the GPU
k mod (GPUs on the machine); call it right after ``minicnn.distributed.init()``, before
anything is allocated on a GPU. Two ranks must not share a GPU under NCCL.

Waiting with a deadline: NCCL calls only enqueue work on a CUDA stream; ``NcclReducer``
records an event after them and polls it, so that a dead peer ends in
``DistributedTimeout`` (and an abort of the NCCL group) instead of a hang — the same rule
as every MPI wait in ``minicnn.distributed.comm``.

Everything here imports CuPy lazily: on a machine without GPUs this module loads, says
``available() == False``, and is never used. Its tests run only where GPUs are present.
"""
import time

from minicnn.distributed.comm import DistributedTimeout, LONGEST_NAP


def _nccl_module():
    from cupy.cuda import nccl
    return nccl


def available():
    """True when CuPy imports, sees a GPU, and was built with NCCL."""
    from minicnn.backend import cupy_or_none
    if cupy_or_none() is None:
        return False
    try:
        nccl = _nccl_module()
        nccl.get_version()
    except Exception:   # no NCCL in this CuPy build, or the library does not load
        return False
    return True


def select_device(communicator):
    """Make this rank use GPU (local rank mod GPUs on this machine); returns its number.

    The local rank is this rank's position among the ranks of its own machine (MPI's
    shared-memory split), so two machines with 4 GPUs each and 4 ranks each use GPUs
    0-3 on both.
    """
    from minicnn.backend import cupy_or_none
    cupy = cupy_or_none()
    if cupy is None:
        raise RuntimeError("select_device: no CUDA GPU is visible to CuPy on rank "
                           f"{communicator.rank}")
    local_rank = getattr(communicator, "local_rank", communicator.rank)
    device = local_rank % cupy.cuda.runtime.getDeviceCount()
    cupy.cuda.Device(device).use()
    return device


def _nccl_dtype(nccl, dtype):
    names = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64"}
    if str(dtype) not in names:
        raise TypeError(f"NcclReducer: gradients must be float16/32/64, got {dtype}")
    return getattr(nccl, names[str(dtype)])


class NcclReducer:
    """``allreduce_many_`` (sum, in place) of CuPy arrays over the ranks of
    ``communicator``, done by NCCL. Builds the NCCL group on creation (a collective)."""

    def __init__(self, communicator):
        import cupy
        nccl = _nccl_module()
        self.cupy, self.nccl, self.communicator = cupy, nccl, communicator
        unique_id = nccl.get_unique_id() if communicator.rank == 0 else None
        unique_id = communicator.broadcast_object(unique_id, 0, "broadcast of the NCCL id")
        self.group = nccl.NcclCommunicator(communicator.size, unique_id, communicator.rank)

    def allreduce_many_(self, arrays, what="allreduce", timeout=None):
        """Sum every array over the ranks, in place. The calls are grouped so NCCL can
        run them as one launch; then an event tells when the stream has finished them."""
        stream = self.cupy.cuda.get_current_stream()
        self.nccl.groupStart()
        try:
            for array in arrays:
                if not array.flags.c_contiguous:
                    raise ValueError("NcclReducer: buffers must be C-contiguous")
                self.group.allReduce(array.data.ptr, array.data.ptr, array.size,
                                     _nccl_dtype(self.nccl, array.dtype), self.nccl.NCCL_SUM,
                                     stream.ptr)
        finally:
            self.nccl.groupEnd()
        done = self.cupy.cuda.Event(block=False, disable_timing=True)
        done.record(stream)
        timeout = self.communicator.timeout if timeout is None else timeout
        started = time.monotonic()
        while not done.done:
            if time.monotonic() - started > timeout:
                self.group.abort()
                raise DistributedTimeout(
                    f"rank {self.communicator.rank} of {self.communicator.size}: NCCL {what} "
                    f"did not complete within {timeout:g} s; another rank has died or hangs")
            time.sleep(LONGEST_NAP / 10)
        return arrays
