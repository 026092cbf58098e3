"""Model parallelism, the AlexNet lesson: each rank holds one tower of the network.

Krizhevsky, Sutskever & Hinton (2012), Section 3.2 and Figure 2: the network did not fit
in one GTX 580's 3 GB, so half of every layer's kernels lived on each of two GPUs, and
"the GPUs communicate only in certain layers": conv3 reads the conv2 maps of *both*
towers, and so does each fully connected layer read all of the previous layer's outputs;
conv2, conv4 and conv5 read only the maps of their own tower. In one process that
network is the grouped-convolution ``architectures.alexnet.alexnet`` (``groups=2`` for
conv2, conv4, conv5). Here the two towers run as two MPI ranks::

    rank 0 (tower 0)                               rank 1 (tower 1)
    conv1 … pool2 (48+128 maps)                    conv1 … pool2 (the other halves)
            └──────────── exchange: each gets both towers' pool2 ───────┘
    conv3 … pool5, flatten                         conv3 … pool5, flatten
            └──────────── exchange ─────────────────────────────────────┘
    fc6 (2048 of 4096 units)                       fc6 (the other 2048)
            └──────────── exchange ─────────────────────────────────────┘
    fc7 …                 … exchange …  fc8 … exchange: the logits, on both ranks

``architectures.alexnet.AlexNetTower`` cuts the grouped model's weights into one tower's
share (its rows of every weight) and into *stages* that run between exchanges, and
``architectures.alexnet.ModelParallelAlexNet`` puts a tower on each rank; this module
holds what any such network needs from the engine: the exchange, a point-to-point
message differentiable both ways, and ``Replicate`` for the input they all read.

The exchange, forward and backward
----------------------------------
Forward: tower t has its stage output y_t (N, C_t, …). It sends y_t to every other tower
and receives theirs (``Sendrecv``: both directions posted at once, so two towers sending
to each other cannot deadlock), then continues from the join [y_0, y_1, …] along axis 1.

Backward: the join fed the next stage of *every* tower, so the gradient of y_t is the sum
of what each tower's next stage sends back for it:

    ∂L/∂y_t = Σ_s  (gradient of tower s's join)[the block of y_t]

Each tower splits the gradient of its join into per-tower blocks, sends block s to
tower s, receives the others' blocks for y_t, and adds them to its own. The last exchange
(the logits) is different: both ranks then compute the *same* loss from the same logits
— it is replicated, not split — so each rank's gradient of the logits is already the
whole gradient, and its block for its own fc8 units is taken as it is, without summing.

What moves, at 227×227: per image, each tower sends its pool2 maps (128·13·13), its pool5
maps (128·6·6), its halves of fc6 and fc7 (2048 each) and of the logits (500) — about
31,000 numbers — and about as many gradients back, while the 60 million weights never
move. That is why the towers could live on separate GPUs in 2012 — and why data
parallelism (move the gradients of every weight each step) wins once the weights fit on
one device.

Every rank feeds the same whole batch of images to its tower (read with the same seed,
or broadcast from rank 0); when the images require a gradient (saliency maps, adversarial
examples), ``Replicate`` sums the towers' shares of it. Training needs no gradient
averaging: each weight lives on exactly one rank, and its gradient there is already
complete.
"""
import numpy as np

from minicnn.backend import get_array_module
from minicnn.distributed import comm as _comm
from minicnn.tensor import Function

TAG_SHAPE, TAG_ACTIVATION, TAG_GRADIENT = 11, 12, 13
MAX_RANK = 8                 # shape messages carry up to this many dimensions


def _ring_peers(rank, size, step):
    """At ``step`` (1 … size−1) of a ring exchange: send to rank+step, receive from
    rank−step. Over all steps every rank meets every other exactly once."""
    return (rank + step) % size, (rank - step) % size


def _exchange_shapes(communicator, shape, step):
    """Send this tower's shape to the peer of ``step``; receive the other peer's shape."""
    dest, source = _ring_peers(communicator.rank, communicator.size, step)
    mine = np.zeros(MAX_RANK + 1, dtype=np.int64)
    mine[0], mine[1:1 + len(shape)] = len(shape), shape
    theirs = np.empty_like(mine)
    communicator.sendrecv(mine, dest, theirs, source, what="exchange of activation shapes",
                          tag=TAG_SHAPE)
    return tuple(int(d) for d in theirs[1:1 + theirs[0]])


class Exchange(Function):
    """Join every tower's activation along axis 1, in tower order (see module doc).

    ``replicated``: the consumer of the join is the same on every rank (the loss), so the
    backward keeps this tower's block of the gradient without adding the others'.
    """

    def __init__(self, communicator, replicated=False):
        self.communicator, self.replicated = communicator, replicated

    def forward(self, y):
        comm = self.communicator
        if y.ndim > MAX_RANK:
            raise ValueError(f"Exchange: activations of rank at most {MAX_RANK}, got {y.shape}")
        xp = get_array_module(y)
        mine = xp.ascontiguousarray(y)
        parts = [None] * comm.size
        parts[comm.rank] = mine
        for step in range(1, comm.size):
            dest, source = _ring_peers(comm.rank, comm.size, step)
            shape = _exchange_shapes(comm, mine.shape, step)
            if shape[:1] + shape[2:] != mine.shape[:1] + mine.shape[2:]:
                raise ValueError(f"Exchange: tower {source} sent an activation of shape "
                                 f"{shape}, which cannot join tower {comm.rank}'s "
                                 f"{mine.shape} along axis 1")
            parts[source] = xp.empty(shape, dtype=mine.dtype)
            comm.sendrecv(mine, dest, parts[source], source,
                          what=f"exchange of activations with tower {source}",
                          tag=TAG_ACTIVATION)
        self.widths = [p.shape[1] for p in parts]
        return xp.concatenate(parts, axis=1)

    def backward(self, g):
        comm = self.communicator
        xp = get_array_module(g)
        bounds = np.cumsum([0] + self.widths)
        blocks = [xp.ascontiguousarray(g[:, bounds[t]:bounds[t + 1]]) for t in range(comm.size)]
        gy = blocks[comm.rank].copy()
        if self.replicated:
            return gy
        for step in range(1, comm.size):
            dest, source = _ring_peers(comm.rank, comm.size, step)
            received = xp.empty_like(gy)
            comm.sendrecv(blocks[dest], dest, received, source,
                          what=f"exchange of gradients with tower {source}",
                          tag=TAG_GRADIENT)
            gy += received
        return gy


class Replicate(Function):
    """The input image, given whole to every tower: identity forward; backward, the sum of
    the towers' gradients of it over the ranks (an ``Allreduce``) — each tower's conv1
    saw the whole image, so each holds only its own part of the image's gradient."""

    def __init__(self, communicator):
        self.communicator = communicator

    def forward(self, x):
        return x

    def backward(self, g):
        return self.communicator.allreduce_(g.copy(), what="sum of the input's gradient")


def exchange(y, communicator=None, replicated=False):
    """The join of every rank's ``y`` along axis 1, differentiable (see ``Exchange``)."""
    return Exchange(communicator or _comm.world(), replicated)(y)
