"""Run under ``mpiexec -n 2``: data-parallel training equals one process with twice the batch.

For each network (LeNet-5 modern, its gradients in several buckets; a small batch-norm
network with SyncBatchNorm), every rank trains with per-rank batches of B over its shard
of a seeded shuffled set, averaging gradients; rank 0 also trains the same network alone
with batches of 2·B over the same order, and compares every parameter and buffer. Rank 1
starts from deliberately different weights, so the comparison also proves that
``prepare`` broadcasts rank 0's.

Also checked here, on real ranks: each epoch's shards cover every index exactly once;
``reduce_means`` weights per-rank means by their counts. Rank 0 prints one line
``RESULT <json>`` that tests/test_distributed.py reads.
"""
import json
import sys
from collections import OrderedDict

import numpy as np

import architectures
from minicnn import distributed, functional as F, nn, optim
from minicnn.data.loader import DataLoader
from minicnn.nn import init
from minicnn.tensor import Tensor

PER_RANK_BATCH = 6
STEPS_PER_EPOCH = 2
EPOCHS = 2


def lenet5():
    init.manual_seed(0)
    return architectures.create("lenet5", num_classes=10, in_channels=1).double()


def small_bn_network():
    """conv → BN2d → ReLU → pool → conv → BN2d → ReLU → global pool → FC → BN1d → FC."""
    init.manual_seed(1)
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(1, 4, 3, padding=1), bn1=nn.BatchNorm2d(4), relu1=nn.ReLU(),
        pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(4, 6, 3), bn2=nn.BatchNorm2d(6), relu2=nn.ReLU(),
        pool2=nn.GlobalAvgPool2d(), flatten=nn.Flatten(),
        fc1=nn.Linear(6, 12), bn3=nn.BatchNorm1d(12), relu3=nn.ReLU(),
        fc2=nn.Linear(12, 10))).double()


def dataset(size, world_batch, steps, epochs):
    rng = np.random.default_rng(7)
    count = world_batch * steps
    images = rng.normal(size=(count, 1, size, size))       # float64: exact comparisons
    labels = rng.integers(0, 10, size=count)
    return images, labels


def train(model, loader, epochs, after_backward=lambda: None):
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    model.train()
    for epoch in range(epochs):
        for images, labels in loader.batches(epoch):
            loss = F.cross_entropy(model(Tensor(images)), labels)
            optimizer.zero_grad()
            loss.backward()
            after_backward()
            optimizer.step()
    return model


def largest_difference(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb), (list(sa), list(sb))
    return max(float(np.max(np.abs(sa[k] - sb[k]))) for k in sa)


def check_training(name, build, image_size, communicator, sync_batchnorm, bucket_mb):
    size = communicator.size
    images, labels = dataset(image_size, size * PER_RANK_BATCH, STEPS_PER_EPOCH, EPOCHS)
    model = build()
    if communicator.rank != 0:                      # a different start, on purpose
        for p in model.parameters():
            p.data = p.data + 0.5
    dp = distributed.DataParallel(model, communicator, bucket_mb, sync_batchnorm)
    dp.prepare()
    loader = DataLoader((images, labels), PER_RANK_BATCH, shuffle=True, seed=3)
    sharded = dp.shard(loader)
    assert len(sharded) == STEPS_PER_EPOCH, len(sharded)
    train(model, sharded, EPOCHS, dp.after_backward)

    # the replicas must be identical: compare a digest of rank 1's state with rank 0's
    flat = np.concatenate([v.ravel() for v in model.state_dict().values()])
    gathered = communicator.allgather(flat)
    replicas_differ = float(np.max(np.abs(gathered - gathered[0])))

    result = {}
    if communicator.rank == 0:
        alone = build()
        single = DataLoader((images, labels), size * PER_RANK_BATCH, shuffle=True, seed=3)
        train(alone, single, EPOCHS)
        result = {"max_difference": largest_difference(model, alone),
                  "replicas_differ": replicas_differ,
                  "moved": largest_difference(alone, build()),
                  "buckets": len(dp._buckets.buckets),
                  "sync_layers": sum(isinstance(m, distributed.SyncBatchNorm2d)
                                     for m in model.modules())}
    return {name: result}


def check_sharding(communicator):
    """Every index once per epoch over the ranks, for N divisible and not."""
    outcome = {}
    for count, remainder in ((24, "pad"), (25, "pad"), (25, "drop"), (25, "uneven")):
        seen = []
        for epoch in range(3):
            sampler = distributed.DistributedSampler(count, communicator.rank, communicator.size,
                                                     seed=5, remainder=remainder)
            mine = sampler.indices(epoch)
            assert len(mine) == len(sampler)
            longest = np.array([len(mine)], dtype=np.int64)
            communicator.allreduce_(longest, op="max")
            padded = np.full(int(longest[0]), -1, dtype=np.int64)
            padded[:len(mine)] = mine
            everyone = communicator.allgather(padded)
            seen.append(np.bincount(everyone[everyone >= 0], minlength=count).tolist())
        outcome[f"{count}-{remainder}"] = seen
    return {"sharding": outcome}


def check_metrics(communicator):
    dp = distributed.DataParallel(nn.Linear(1, 1), communicator)
    count = 3 + communicator.rank                         # 3 samples on rank 0, 4 on rank 1
    mean = float(communicator.rank + 1)                   # means 1 and 2
    combined = dp.reduce_means({"loss": mean, "top5": None}, count)
    return {"metrics": combined}


def main():
    communicator = distributed.init(timeout=60)
    results = {}
    # LeNet-5's 44,426 float64 gradients (347 KiB) in buckets of 50 KiB: several calls
    results.update(check_training("lenet5", lenet5, 28, communicator, sync_batchnorm=False,
                                  bucket_mb=0.05))
    results.update(check_training("syncbn", small_bn_network, 12, communicator,
                                  sync_batchnorm=True, bucket_mb=4))
    results.update(check_sharding(communicator))
    results.update(check_metrics(communicator))
    if communicator.rank == 0:
        print("RESULT " + json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
