"""Run under ``mpiexec -n 2``: AlexNet's two towers on two ranks equal the grouped model.

Every rank builds the same grouped single-process ``alexnet`` (same seed), keeps its
tower (``ModelParallelAlexNet``), runs forward and backward on the same small batch and
compares the logits, the gradient of the input and the gradients of its tower's weights
with the grouped model's (the rows its tower was cut from). Rank 0 prints
``RESULT <json>`` with the largest relative differences of both ranks.
"""
import json
import sys

import numpy as np

from architectures.alexnet import alexnet
from minicnn import distributed, functional as F
from architectures.alexnet import ModelParallelAlexNet, tower_parameter_pairs
from minicnn.nn import init
from minicnn.tensor import Tensor

BATCH, SIZE, CLASSES = 2, 67, 10     # 67×67: the smallest input AlexNet's pools take


def relative(a, b):
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def main():
    communicator = distributed.init(timeout=120)
    init.manual_seed(0)
    model = alexnet(num_classes=CLASSES, in_channels=3, dropout=0.0)
    rng = np.random.default_rng(1)
    images = rng.normal(size=(BATCH, 3, SIZE, SIZE)).astype(np.float32)
    labels = rng.integers(0, CLASSES, size=BATCH)

    towers = ModelParallelAlexNet(model, communicator)
    x_parallel = Tensor(images, requires_grad=True)
    logits = towers(x_parallel)
    F.cross_entropy(logits, labels).backward()

    x_single = Tensor(images, requires_grad=True)
    expected = model(x_single)
    F.cross_entropy(expected, labels).backward()

    result = {"logits": relative(logits.data, expected.data),
              "input_gradient": relative(x_parallel.grad, x_single.grad),
              "weights": 0.0, "tower_parameters": 0, "logits_shape": list(logits.shape)}
    pairs = tower_parameter_pairs(model, towers.tower, communicator.rank)
    for name, mine, full, rows in pairs:
        assert mine.grad is not None, f"{name}: no gradient on tower {communicator.rank}"
        result["weights"] = max(result["weights"], relative(mine.data, full.data[rows]))
        result[f"grad {name}"] = relative(mine.grad, full.grad[rows])
        result["tower_parameters"] += mine.size
    everyone = communicator.broadcast_object(result, root=1)  # rank 1's, to rank 0
    if communicator.rank == 0:
        print("RESULT " + json.dumps({"tower0": result, "tower1": everyone}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
