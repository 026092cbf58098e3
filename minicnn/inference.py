"""Inference on several cores: each core runs the whole network on its share of the batch.

Training runs its threads *inside* each operation: a GEMM's rows over BLAS's threads, a
kernel's samples over minicnn's (``minicnn/kernels/threads.py``). Every operation ends with
the threads meeting and waiting for the slowest, and a network is hundreds of operations,
many of them too small to split well (LeNet-5's are 10–500 µs; BLAS's threads spin between
GEMMs while minicnn's want the same cores). On two cores that parallelism bought little:
LeNet-5's inference at batch 256 ran 35,800 images/s on one thread and 35,100 on two.

In inference every sample is computed on its own, end to end — in eval mode batch norm
uses its running statistics and dropout is off — so the batch itself can be split instead::

    thread 1:  model(x[:N/2])     every operation on one thread, BLAS included
    thread 2:  model(x[N/2:])
               ... and the threads meet once, to concatenate the outputs.

Measured (AMD EPYC, 2 cores, OpenBLAS SkylakeX kernels, the benchmark suite's worker,
images/s, two alternating runs each, batch norms folded in both): LeNet-5 at batch 64
33,800 / 33,700 → 39,400 / 39,100, at batch 256 35,100 / 34,500 → 59,300 / 58,200;
ResNet-18 (CIFAR, batch 64) 140 / 187 → 210 / 196; VGG-16-BN (CIFAR, batch 64)
265 / 266 → 338 / 335. Splitting inside each convolution instead (each thread its share of
the samples, BLAS single-threaded, and the threads meeting at every convolution) was tried
and was slower than BLAS's own threads: ResNet-18 training 54 / 46 → 36 / 39 images/s,
VGG-16-BN 84 → 74 / 77. So training keeps its threads inside the operations — except for a
network whose samples never meet in training (no batch norm, no dropout: LeNet-5), whose
training batch is split the same way (``minicnn.split_training``).

``BatchParallel(model)`` does that for a model in eval mode under ``no_grad``, and is the
model itself otherwise (training, or a forward that records a graph: a backward through
two threads' graphs is not what it is for). It is what ``deploy`` returns, with the batch
norms folded::

    predictor = deploy(model, input_size=32)
    with no_grad():
        scores = predictor(images)
"""
from minicnn.backend import device_of, get_array_module
from minicnn.kernels import threads as kernel_threads
from minicnn.nn.module import Module
from minicnn.tensor import Tensor, is_grad_enabled


# A thread's share is at least this many samples. Each thread runs every operation's
# Python (and Python runs one thread at a time), so a share must hold enough arithmetic to
# pay for it: EfficientDet-D0 (hundreds of small operations) at batch 4 ran 66–75
# images/s split in two against 88–94 whole; LeNet-5 at batch 64 gains from the split.
MIN_SAMPLES_PER_THREAD = 4


class BatchParallel(Module):
    """``model``, with inference batches split across ``threads`` threads (default: the
    kernels' thread count, NUMBA_NUM_THREADS) as the module docstring describes."""

    def __init__(self, model, threads=None):
        super().__init__()
        self.model = model
        self.threads = threads

    def forward(self, x):
        data = x.data if isinstance(x, Tensor) else x
        if not self._may_split(data):
            return self.model(x)
        outputs = kernel_threads.over_shares(
            lambda first, last: self.model(Tensor(data[first:last])), len(data),
            MIN_SAMPLES_PER_THREAD, self.threads)
        return concatenate(outputs)

    def _may_split(self, data):
        """Only a forward that records nothing, of a model all in eval mode, on the CPU."""
        return not (is_grad_enabled() or any(m.training for m in self.model.modules())
                    or device_of(data) != "cpu" or getattr(data, "ndim", 0) == 0)

    def state_dict(self):
        """The model's own state, under its own names (a checkpoint of the model)."""
        return self.model.state_dict()

    def load_state_dict(self, state, strict=True):
        return self.model.load_state_dict(state, strict=strict)

    def extra_repr(self):
        return f"threads={self.threads or 'auto'}"


def concatenate(outputs):
    """The threads' outputs joined along the batch: Tensors and arrays, and tuples, lists
    and dicts of them (a detector's per-level maps)."""
    first = outputs[0]
    if isinstance(first, Tensor):
        return Tensor(concatenate([o.data for o in outputs]))
    if isinstance(first, (tuple, list)):
        return type(first)(concatenate(list(parts)) for parts in zip(*outputs))
    if isinstance(first, dict):
        return {key: concatenate([o[key] for o in outputs]) for key in first}
    return get_array_module(first).concatenate(outputs)


def deploy(model, input_size=None, in_channels=None, threads=None):
    """What to run in production: an eval-mode copy of ``model`` with its batch norms
    folded into the layers before them (``minicnn.fold``), max pooling moved before the
    activation it follows (``pool_before_activation``), splitting inference batches across
    threads (``BatchParallel``). It computes exactly what ``model`` computes in eval mode,
    up to the rounding the folding changes."""
    from minicnn.fold import fold_batchnorm
    folded = fold_batchnorm(model, input_size=input_size, in_channels=in_channels)
    deployed = BatchParallel(folded, threads)
    deployed.folded_pairs = folded.folded_pairs
    deployed.pools_moved = pool_before_activation(folded)
    deployed.eval()
    return deployed


def pool_before_activation(model):
    """Swap every max pooling that directly follows a ReLU, ReLU6 or LeakyReLU (slope ≥ 0)
    in a ``Sequential`` (one that runs its children in order), in place; returns how many.

    Max pooling commutes with any elementwise f that never decreases: the largest of
    f(x₁), …, f(xₖ) is f of the largest xᵢ — exactly, in floating point too, for these
    piecewise-linear f (a padding cell is −∞ and never the largest). Pooled first, a 2×2
    pool leaves f a quarter of the values: LeNet-5's two ReLUs, and VGG's and AlexNet's
    last of each stage. For inference only: the backward pass would differ where ties
    meet f's flat part.
    """
    from minicnn.nn import LeakyReLU, MaxPool2d, ReLU, ReLU6, Sequential

    def never_decreasing(module):
        return (type(module) in (ReLU, ReLU6)
                or type(module) is LeakyReLU and module.negative_slope >= 0)

    moved = 0
    for container in model.modules():
        if not isinstance(container, Sequential) or type(container).forward is not \
                Sequential.forward:
            continue
        items = list(container._modules.items())
        for i in range(len(items) - 1):
            if never_decreasing(items[i][1]) and type(items[i + 1][1]) is MaxPool2d:
                items[i], items[i + 1] = items[i + 1], items[i]
                moved += 1
        container._modules.clear()
        container._modules.update(items)
    return moved

