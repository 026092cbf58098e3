"""Run under ``mpiexec -n 2``: rank 1 fails in the middle of data-parallel training.

``python rank_failure.py MODE TIMEOUT`` with MODE

* ``exit``  rank 1 vanishes (``os._exit(1)``, as a crash or the OOM killer would);
* ``leave`` rank 1's program ends early but in order (``sys.exit(3)``, as after an error
            message), so MPI_Finalize runs and the launcher sees nothing wrong;
* ``hang``  rank 1 stops answering (sleeps) while rank 0 waits in the gradient allreduce;
* ``raise`` rank 1 raises an exception.

Rank 0 must not wait forever: tests/test_distributed.py checks that the job ends within a
bound and says why. Each rank prints ``step N`` as it goes.
"""
import os
import sys
import time

import numpy as np

from minicnn import distributed, functional as F, nn, optim
from minicnn.tensor import Tensor

FAILING_STEP = 3


def main():
    mode, timeout = sys.argv[1], float(sys.argv[2])
    communicator = distributed.init(timeout=timeout)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    dp = distributed.DataParallel(model, communicator).prepare()
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    rng = np.random.default_rng(communicator.rank)
    for step in range(1000):
        if communicator.rank == 1 and step == FAILING_STEP:
            print(f"rank 1: failing ({mode}) at step {step}", flush=True)
            if mode == "exit":
                os._exit(1)
            if mode == "leave":
                sys.exit(3)
            if mode == "hang":
                time.sleep(600)
            if mode == "raise":
                raise RuntimeError("rank 1 broke on purpose")
        x = Tensor(rng.normal(size=(4, 8)).astype(np.float32))
        loss = F.cross_entropy(model(x), rng.integers(0, 4, size=4))
        optimizer.zero_grad()
        loss.backward()
        dp.after_backward()
        optimizer.step()
        print(f"rank {communicator.rank}: step {step}", flush=True)
    print(f"rank {communicator.rank}: finished, which it must not", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
