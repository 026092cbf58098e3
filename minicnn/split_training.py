"""A training step on several cores: each core runs the whole network on its share of the batch.

Training normally runs its threads *inside* each operation (a GEMM's rows over BLAS's
threads, a kernel's samples over minicnn's). On a small network that buys little: LeNet-5's
operations take 10–500 µs, every one ends with the threads meeting, and BLAS's threads spin
between GEMMs while minicnn's want the same cores. The loss of a batch, though, is a mean
over its samples, so its gradient is a weighted sum of the gradients of the batch's parts::

    L = (1/N) Σ_n ℓ_n = Σ_s (N_s/N) · L_s            L_s: the mean loss of share s (N_s samples)
    ∂L/∂θ = Σ_s (N_s/N) · ∂L_s/∂θ

    thread 1:  L_1 = loss(model(x[:N/2]));  backward of (N_1/N)·L_1   (its own graph)
    thread 2:  L_2 = loss(model(x[N/2:]));  backward of (N_2/N)·L_2
               ... and the threads meet once: θ.grad = Σ_s their gradients, in share order.

Both threads read the same weights (nothing writes them until the optimizer's step, after
the threads have met). Each thread's backward keeps its gradients in a dict of its own
(``Tensor.backward(leaf_grads=...)``), never in the shared ``.grad``; the sum is taken in
share order, so a step's result depends on the thread count, never on which thread finishes
first. BLAS runs single-threaded meanwhile (``kernels.threads.single_threaded_blas``), and
each thread's kernels on that thread alone.

When it applies: the identity above holds only when each sample's loss depends on that
sample alone. In training mode batch norm normalises with the *batch's* statistics, and
dropout draws its masks for the whole batch in order, so a network with either (every
Module says so in ``independent_samples``), forward hooks (they would see halves), an
active trace, a gradient wanted for the images themselves, a batch too small to share,
or the GPU, is run whole (``split_reason`` says why). A custom Module that calls
``F.batch_norm`` or a dropout in training without saying ``independent_samples = False``
is caught at that call (``refuse_in_share``): an error, never a silent change of meaning.

Measured (see ``train_step`` in minicnn/train.py, which uses it, and the benchmark suite).
"""
import threading

from minicnn.backend import device_of
from minicnn.kernels import threads as kernel_threads
from minicnn.tensor import Tensor, _function_observers

# A thread's share is at least this many samples: each thread runs every operation's Python
# (and Python runs one thread at a time), so a share must bring enough arithmetic to pay
# for it.
MIN_SAMPLES_PER_THREAD = 16

_share = threading.local()          # .active: this thread is running one share of a batch


def split_reason(model, images, threads=None):
    """Why ``model``'s training batch ``images`` (an array) is run whole, or None when it
    may be split across threads."""
    if device_of(images) != "cpu":
        return "the batch is on the GPU"
    if _function_observers:
        return "a trace is recording every operation"
    if kernel_threads.share_count(len(images), MIN_SAMPLES_PER_THREAD, threads) < 2:
        if len(images) < 2 * MIN_SAMPLES_PER_THREAD:
            return f"a batch of {len(images)} is under {2 * MIN_SAMPLES_PER_THREAD} samples"
        return "one thread"
    for name, module in model.named_modules():
        if module._forward_hooks:
            return f"{name or 'the model'} has forward hooks"
        if module.training and not module.independent_samples:
            return (f"{name or 'the model'} ({type(module).__name__}) mixes the samples of "
                    f"a batch in training (batch statistics or random draws)")
    return None


def split_backward(images, loss_of, threads=None):
    """Each thread: ``loss, extra = loss_of(Tensor(images[first:last]), first, last)``
    and the backward of (its share of the batch) × loss. Returns the batch's loss (a
    float), the threads' ``extra`` values in share order, and the summed gradients as
    [(leaf, gradient), ...] — the leaves' ``grad`` untouched."""
    count = len(images)

    def share(first, last):
        _share.active = True
        try:
            loss, extra = loss_of(Tensor(images[first:last]), first, last)
            weight = (last - first) / count
            gradients = {}
            (loss * weight).backward(leaf_grads=gradients)
            return float(loss.item()) * weight, extra, gradients
        finally:
            _share.active = False

    shares = kernel_threads.over_shares(share, count, MIN_SAMPLES_PER_THREAD, threads)
    total = {}
    for _, _, gradients in shares:                 # share order: a fixed summation order
        for key, (leaf, gradient) in gradients.items():
            kept = total.setdefault(key, [leaf, None])
            kept[1] = gradient if kept[1] is None else kept[1] + gradient
    return (sum(value for value, _, _ in shares), [extra for _, extra, _ in shares],
            [(leaf, gradient) for leaf, gradient in total.values()])


def refuse_in_share(operation):
    """Raise if this thread runs one share of a split batch: ``operation`` (batch norm's
    batch statistics, a dropout's masks) would see the share, not the batch."""
    if getattr(_share, "active", False):
        raise RuntimeError(
            f"{operation} in training ran on one share of a batch split across threads "
            f"(minicnn.split_training), where it would see part of the batch: give the "
            f"Module that calls it the class attribute independent_samples = False")
