"""Run under ``mpiexec -n 2`` on a machine with two GPUs: NCCL sums GPU buffers.

Rank r holds [r, r+1, r+2] on its own GPU; after ``NcclReducer.allreduce_many_`` both
hold [1, 3, 5]. Rank 0 prints ``RESULT {"sums": [rank 0's, rank 1's]}``.
"""
import json
import sys

from minicnn import distributed
from minicnn.distributed import nccl


def main():
    communicator = distributed.init(timeout=60)
    nccl.select_device(communicator)
    import cupy
    buffer = cupy.arange(3, dtype=cupy.float32) + communicator.rank
    nccl.NcclReducer(communicator).allreduce_many_([buffer])
    mine = buffer.get().tolist()
    theirs = communicator.broadcast_object(mine, root=1)
    if communicator.rank == 0:
        print("RESULT " + json.dumps({"sums": [mine, theirs]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
