"""Training on several processes and machines, over MPI (mpi4py + MPICH), NCCL on GPUs.

Two ways to split the work, both from the course:

* **data parallel** (``data_parallel``): every rank holds the whole network, takes its own
  share of each batch, and the ranks average their gradients (``Allreduce``) before every
  step — how VGG was trained on 4 GPUs. ``SyncBatchNorm`` (``sync_batchnorm``) makes
  batch norm see the whole global batch; ``nccl`` reduces GPU gradients without the host.
* **model parallel** (``model_parallel``): each rank holds part of the network —
  AlexNet's two towers, exchanging activations exactly where Figure 2 of the paper draws
  the towers talking.

``comm`` is the thin layer over MPI that both use: ranks, collectives, messages, and a
deadline on every wait so a dead rank ends the job with a clear error, not a hang.

    mpirun -np 2 python -m architectures.lenet5 --train mnist --distributed

What ``--distributed`` does, in a few calls (``minicnn.cli`` and ``minicnn.train.fit``
make them)::

    from minicnn import distributed
    distributed.init()                           # join the MPI job (mpi4py imported here)
    dp = distributed.DataParallel(model)         # sync_batchnorm=True to swap BN layers
    dp.prepare()                                 # rank 0's weights on every rank
    train_loader = dp.shard(train_loader)        # this rank's samples of every epoch
    ...   loss.backward(); dp.after_backward(); optimizer.step()   # averaged gradients
    if dp.is_main_process: ...print, save...     # rank 0 alone prints and writes

Across machines, only the launch changes (``mpirun -f hostfile``): see ``comm``.
"""
from minicnn.distributed.comm import (Communicator, DistributedError, DistributedTimeout,
                                      SingleProcess, init, is_initialized, is_main_process,
                                      main_process_first, rank, size, world)
from minicnn.distributed.data_parallel import (DataParallel, DistributedLoader,
                                               DistributedSampler, GradientBuckets,
                                               average_buffers, average_gradients,
                                               broadcast_state, decorrelate_generators,
                                               shard_indices)
from minicnn.distributed.sync_batchnorm import (SyncBatchNorm, SyncBatchNorm1d,
                                                SyncBatchNorm2d, convert_sync_batchnorm,
                                                sync_batch_norm)
