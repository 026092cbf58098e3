"""Data parallelism: every rank holds a replica of the network and sees its own samples.

The idea (Krizhevsky 2014, "One weird trick"; VGG was trained this way on 4 GPUs)
--------------------------------------------------------------------------------
The loss of a batch is a mean over its samples, so its gradient is a mean too. Split a
batch of P·B samples into P pieces of B, let rank r compute the gradient g_r of the mean
loss over its piece, and

    g = (1/P) · Σ_r g_r                                   (the gradient of the whole batch)

Every rank adds up the g_r (``Allreduce``), divides by P, and takes the same optimizer
step from the same weights: the replicas stay identical, and P processes have trained
exactly like one process with a batch of P·B (up to the order of float additions).
Three details make that true:

* **the same start**: rank 0's weights and buffers are broadcast once (``prepare``);
* **disjoint samples**: ``DistributedSampler`` gives rank r the samples r, r+P, r+2P, …
  of each epoch's shuffled order, so the P pieces of step k are together exactly the
  batch k a single process with batch P·B would take;
* **batch norm**: its mean and variance are statistics of the batch, not sums of
  per-sample terms; with plain batch norm each rank normalizes by its own B samples
  (fine in practice, but not the same function). ``SyncBatchNorm``
  (``minicnn.distributed.sync_batchnorm``) uses the statistics of all P·B.

Buckets
-------
A network has many small parameter tensors (a bias of 6 numbers, ...). One ``Allreduce``
per tensor would pay MPI's fixed cost per call (a few microseconds on one machine, tens
over a network) dozens of times a step. ``GradientBuckets`` packs the gradients into a
few flat buffers of about ``bucket_mb`` megabytes, reduces them all with non-blocking
calls posted together — so the transfer of one bucket overlaps the reduction of another —
and unpacks the averages. (Frameworks that hook into the backward pass also send a bucket
as soon as its gradients are ready, while backward computes the rest; minicnn's
``backward`` has no such hook, so the buckets go after it.)

What a training loop adds (``DataParallel`` holds it all)::

    dp = DataParallel(model)                  # after minicnn.distributed.init()
    dp.prepare()                              # rank 0's weights everywhere
    loader = dp.shard(loader)                 # this rank's samples
    for images, labels in loader.batches(epoch):
        loss = cross_entropy(model(Tensor(images)), labels)
        optimizer.zero_grad(); loss.backward()
        dp.after_backward()                   # gradients averaged over the ranks
        optimizer.step()

and, around it: only ``dp.is_main_process`` prints and writes checkpoints; evaluation
metrics are combined with ``dp.reduce_means``.
"""
import numpy as np

from minicnn.backend import get_array_module
from minicnn.data.loader import DataLoader
from minicnn.distributed import comm as _comm

DEFAULT_BUCKET_MB = 4.0


# ----------------------------------------------------------------------------- packing

def flat_views(buffer, shapes):
    """Views of consecutive pieces of the flat ``buffer``, one of each shape in ``shapes``:
    the layout every packed buffer here uses (arrays one after the other, C order)."""
    offset = 0
    for shape in shapes:
        size = int(np.prod(shape, dtype=np.int64))
        yield buffer[offset:offset + size].reshape(shape)
        offset += size


def _pack(arrays, buffer, shapes=None):
    """Copy ``arrays`` one after the other into the flat ``buffer`` (None: zeros of the
    matching entry of ``shapes``)."""
    for view, array in zip(flat_views(buffer, shapes or [a.shape for a in arrays]), arrays):
        view[...] = 0 if array is None else array


def _unpack(buffer, arrays):
    """Copy consecutive pieces of the flat ``buffer`` back into ``arrays`` (in place)."""
    for view, array in zip(flat_views(buffer, [a.shape for a in arrays]), arrays):
        array[...] = view


def _groups_by_kind(arrays):
    """{(dtype, device module): [arrays]} in first-seen order: one buffer per group."""
    groups = {}
    for array in arrays:
        key = (np.dtype(array.dtype), get_array_module(array).__name__)
        groups.setdefault(key, []).append(array)
    return groups


def broadcast_state(model, communicator=None, root=0):
    """Overwrite every parameter and buffer of ``model`` with ``root``'s, on every rank.

    One broadcast per dtype (weights and running statistics float32, counters int64),
    of everything packed into one flat array.
    """
    communicator = communicator or _comm.world()
    if communicator.size == 1:
        return model
    arrays = [p.data for p in model.parameters()]
    arrays += [b for b in model.buffers() if b is not None]
    for (dtype, _), group in _groups_by_kind(arrays).items():
        xp = get_array_module(group[0])
        flat = xp.empty(sum(a.size for a in group), dtype=dtype)
        _pack(group, flat)
        communicator.broadcast_(flat, root, what=f"broadcast of the initial {dtype} weights")
        _unpack(flat, group)
    return model


def average_buffers(model, communicator=None):
    """Make the buffers equal on every rank: floating ones (batch norm's running mean and
    variance) averaged over the ranks, integer ones (counters) taken from rank 0.

    With plain batch norm each rank's running statistics follow its own samples; their
    mean is the better estimate of the population's. (With ``SyncBatchNorm`` they are
    equal already, and averaging changes nothing.)
    """
    communicator = communicator or _comm.world()
    if communicator.size == 1:
        return model
    buffers = [b for b in model.buffers() if b is not None]
    for (dtype, _), group in _groups_by_kind(buffers).items():
        xp = get_array_module(group[0])
        flat = xp.empty(sum(a.size for a in group), dtype=dtype)
        _pack(group, flat)
        if dtype.kind == "f":
            communicator.allreduce_(flat, what="averaging of the buffers")
            flat /= communicator.size
        else:
            communicator.broadcast_(flat, 0, what="broadcast of the integer buffers")
        _unpack(flat, group)
    return model


# ----------------------------------------------------------------------------- gradients

class GradientBuckets:
    """The gradients of ``parameters`` packed into flat buffers of about ``bucket_bytes``.

    Layout of one bucket (the parameters of one dtype and device, in registration order)::

        [ grad p1 (flattened) | grad p2 | … | grad pk | has_grad p1 … pk | stop ]

    After the sum over ranks, ``has_grad`` counts the ranks on which each parameter
    received a gradient: a parameter no rank used (a branch the forward pass skipped)
    keeps ``grad = None`` as it would in one process, so the optimizer skips it the same
    way. A rank without a gradient for a parameter that others have contributes zeros.
    ``stop`` (first bucket only) carries a per-rank flag — any rank's Ctrl-C — along
    with the gradients, so that every rank learns of it at the same step at no cost.

    A parameter larger than ``bucket_bytes`` gets a bucket of its own.
    """

    def __init__(self, parameters, bucket_bytes):
        self.parameters = list(parameters)
        if not self.parameters:
            raise ValueError("GradientBuckets: the model has no parameters that require grad")
        self.buckets = []             # (parameters, flat buffer, number of gradient values)
        kinds = {}
        for p in self.parameters:
            kinds.setdefault((np.dtype(p.dtype), get_array_module(p.data).__name__), []).append(p)
        for members in kinds.values():
            current, current_bytes = [], 0
            for p in members:
                if current and current_bytes + p.data.nbytes > bucket_bytes:
                    self._add_bucket(current)
                    current, current_bytes = [], 0
                current.append(p)
                current_bytes += p.data.nbytes
            self._add_bucket(current)

    def _add_bucket(self, members):
        xp = get_array_module(members[0].data)
        values = sum(p.size for p in members)
        extra = len(members) + (1 if not self.buckets else 0)   # has_grad (+ stop)
        self.buckets.append((members, xp.zeros(values + extra, dtype=members[0].dtype), values))

    def matches(self, parameters):
        """Are these still the parameters (and arrays) the buffers were laid out for?"""
        return (len(parameters) == len(self.parameters) and all(
            p is q and p.data.shape == q.data.shape for p, q in zip(parameters, self.parameters)))

    def average(self, reducer, size, stop_requested=False):
        """Replace every gradient by its mean over the ranks; returns whether any rank
        requested a stop. ``reducer.allreduce_many_`` does the sums (MPI or NCCL)."""
        for index, (members, buffer, values) in enumerate(self.buckets):
            _pack([p.grad for p in members], buffer, [p.shape for p in members])
            flags = buffer[values:values + len(members)]
            flags[...] = get_array_module(buffer).asarray([p.grad is not None for p in members])
            if index == 0:
                buffer[-1] = 1.0 if stop_requested else 0.0
        reducer.allreduce_many_([buffer for _, buffer, _ in self.buckets],
                                what="allreduce of the gradients")
        scale = 1.0 / size
        for members, buffer, values in self.buckets:
            counts = buffer[values:values + len(members)].tolist()
            views = flat_views(buffer, [p.shape for p in members])
            for p, count, view in zip(members, counts, views):
                if count > 0:
                    # a fresh array: the bucket is reused next step, p.grad must not alias it
                    p.grad = view * scale
        return bool(self.buckets[0][1][-1] > 0)


def average_gradients(parameters, communicator=None, bucket_mb=DEFAULT_BUCKET_MB):
    """One-off: average the gradients of ``parameters`` over the ranks (see
    ``GradientBuckets``; ``DataParallel`` keeps its buckets from step to step)."""
    communicator = communicator or _comm.world()
    parameters = [p for p in parameters if p.requires_grad]
    if communicator.size > 1:
        GradientBuckets(parameters, bucket_mb * 2 ** 20).average(communicator, communicator.size)


# ----------------------------------------------------------------------------- sharding

REMAINDERS = ("pad", "drop", "uneven")


def shard_indices(order, rank, size, remainder="pad"):
    """Rank ``rank``'s share of ``order``: every ``size``-th index, starting at ``rank``.

    When ``len(order)`` is not a multiple of ``size``:

    * ``"pad"``    repeats the first indices of ``order`` until it is, so every rank gets
                   the same number of samples and every sample is seen at least once
                   (``size − len % size`` of them twice, when ``len ≥ size``);
    * ``"drop"``   leaves out the last ``len % size`` indices: each sample at most once;
    * ``"uneven"`` gives the first ``len % size`` ranks one more: each sample exactly once,
                   but the ranks take different numbers of steps — only for loops
                   without collectives per batch, such as evaluation.

    Why every size-th (strided) and not contiguous blocks: with per-rank batches of B,
    the samples the P ranks take at step k are then positions P·B·k … P·B·(k+1) − 1 of
    ``order`` — exactly the batch k of one process with batch P·B over the same order.
    """
    if remainder not in REMAINDERS:
        raise ValueError(f"shard_indices: remainder must be one of {REMAINDERS}, got "
                         f"{remainder!r}")
    if not 0 <= rank < size:
        raise ValueError(f"shard_indices: rank must be in [0, {size}), got {rank}")
    order = np.asarray(order)
    extra = (-len(order)) % size
    if remainder == "pad" and extra:
        if len(order) == 0:
            raise ValueError("shard_indices: cannot pad an empty order")
        order = np.concatenate([order, np.resize(order, extra)])
    elif remainder == "drop":
        order = order[:len(order) - len(order) % size]
    return order[rank::size]


class DistributedSampler:
    """Each epoch's sample indices for rank ``rank`` of ``size``.

    The epoch's global order is ``order_of_epoch(epoch)`` — a ``DataLoader``'s ``order``,
    so that P ranks see the batches one process would — or, when not given, a permutation
    seeded by ``(seed, epoch)`` (``shuffle``) or 0 … N−1. It is the same on every rank
    (same seed, no communication needed) and is cut by ``shard_indices``.
    """

    def __init__(self, num_samples, rank, size, shuffle=True, seed=0, remainder="pad",
                 order_of_epoch=None):
        if num_samples < 1:
            raise ValueError(f"DistributedSampler: needs at least one sample, got {num_samples}")
        if remainder not in REMAINDERS:
            raise ValueError(f"DistributedSampler: remainder must be one of {REMAINDERS}, got "
                             f"{remainder!r}")
        if not 0 <= rank < size:
            raise ValueError(f"DistributedSampler: rank must be in [0, {size}), got {rank}")
        self.num_samples, self.rank, self.size = int(num_samples), int(rank), int(size)
        self.shuffle, self.seed, self.remainder = shuffle, seed, remainder
        self.order_of_epoch = order_of_epoch

    def global_order(self, epoch):
        if self.order_of_epoch is not None:
            return np.asarray(self.order_of_epoch(epoch))
        if not self.shuffle:
            return np.arange(self.num_samples)
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(epoch, 0)))
        return rng.permutation(self.num_samples)

    def indices(self, epoch):
        """This rank's indices of ``epoch``, in the order it takes them."""
        return shard_indices(self.global_order(epoch), self.rank, self.size, self.remainder)

    def __len__(self):
        """Samples this rank takes per epoch."""
        n, p = self.num_samples, self.size
        if self.remainder == "pad":
            return -(-n // p)
        if self.remainder == "drop":
            return n // p
        return n // p + (1 if self.rank < n % p else 0)


class DistributedLoader(DataLoader):
    """A ``DataLoader`` that serves only this rank's share of every epoch.

    Built from an ordinary loader (same batch size, transform, seed, prefetch): its
    ``order(epoch)`` is this rank's ``DistributedSampler.indices(epoch)`` of the wrapped
    loader's order. Augmentation of batch i of epoch e on rank r draws from
    ``SeedSequence((seed, r), spawn_key=(e, i))``: replayable, like the plain loader,
    and different on every rank.
    """

    def __init__(self, loader, rank, size, remainder="pad"):
        super().__init__((loader.images, loader.labels), loader.batch_size, loader.shuffle,
                         loader.drop_last, loader.transform, loader.seed, loader.prefetch)
        self.rank, self.size = rank, size
        self.sampler = DistributedSampler(len(loader.labels), rank, size, loader.shuffle,
                                          loader.seed, remainder, order_of_epoch=loader.order)

    def __len__(self):
        full, rest = divmod(len(self.sampler), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    @property
    def num_samples(self):
        return min(len(self) * self.batch_size, len(self.sampler))

    def order(self, epoch):
        return self.sampler.indices(epoch)

    def batch(self, epoch, index, order=None):
        order = self.order(epoch) if order is None else order
        chosen = order[index * self.batch_size:(index + 1) * self.batch_size]
        images, labels = self.images[chosen], self.labels[chosen]
        if self.transform is not None:
            seeds = np.random.SeedSequence([int(self.seed), self.rank], spawn_key=(epoch, index))
            images = self.transform(images, np.random.default_rng(seeds))
        return images, labels


# ----------------------------------------------------------------------------- generators

def decorrelate_generators(generators, rank):
    """Move each generator to a stream of its own on every rank.

    Replicas built with the same seed share their random generators' states, so their
    dropout masks would repeat from rank to rank. Rank r jumps each generator ahead r
    times (``bit_generator.jumped``: 2¹²⁷ draws each for PCG64), which gives independent
    streams that are still a function of the seed and the rank — and, because a jump
    commutes with drawing, resuming from rank 0's saved state and jumping again lands
    every rank where an uninterrupted run would be.
    """
    if rank == 0:
        return
    for generator in generators:
        bit_generator = generator.bit_generator
        if hasattr(bit_generator, "jumped"):
            bit_generator.state = bit_generator.jumped(rank).state
        else:   # a bit generator without jumps: reseed from its state and the rank
            words = np.asarray(generator.integers(0, 2 ** 32, size=4, dtype=np.uint64))
            generator.bit_generator.state = type(bit_generator)(
                np.random.SeedSequence(words.tolist() + [rank])).state


# ----------------------------------------------------------------------------- the wrapper

class DataParallel:
    """Data-parallel training of ``model`` over the ranks of ``communicator``.

    ``prepare()``                    rank 0's weights and buffers on every rank (and
                                     per-rank random streams for the given generators);
    ``after_backward(stop)``         average the gradients; returns True when any rank
                                     asked to stop (Ctrl-C), so all stop at the same step;
    ``shard(loader)``                this rank's share of a loader's samples;
    ``synchronize_buffers()``        batch norm's running statistics made equal;
    ``reduce_sums``/``reduce_means`` metrics over all ranks;
    ``main_process_first()``         rank 0 runs the block first (downloads, caches);
    ``is_main_process``              rank 0, the one that prints and saves.

    ``sync_batchnorm=True`` swaps every batch norm for ``SyncBatchNorm`` first. Gradients
    on the GPU go through NCCL when CuPy has it (``minicnn.distributed.nccl``), else
    through the host and MPI. Calling the wrapper runs the model.
    """

    def __init__(self, model, communicator=None, bucket_mb=DEFAULT_BUCKET_MB,
                 sync_batchnorm=False):
        if bucket_mb <= 0:
            raise ValueError(f"DataParallel: bucket_mb must be positive, got {bucket_mb}")
        self.module = model
        self.communicator = communicator or _comm.world()
        self.bucket_bytes = int(bucket_mb * 2 ** 20)
        if sync_batchnorm:
            from minicnn.distributed.sync_batchnorm import convert_sync_batchnorm
            convert_sync_batchnorm(model, self.communicator)
        self._buckets = None
        self._reducer = None

    rank = property(lambda self: self.communicator.rank)
    size = property(lambda self: self.communicator.size)
    is_main_process = property(lambda self: self.communicator.rank == 0)

    def __repr__(self):
        return f"DataParallel({type(self.module).__name__}, {self.communicator!r})"

    def __call__(self, *inputs, **options):
        return self.module(*inputs, **options)

    def prepare(self, generators=()):
        """Broadcast rank 0's parameters and buffers, and give every rank its own random
        streams for ``generators`` (see ``decorrelate_generators``). Call once, after
        building (or restoring) the model and before the first step."""
        broadcast_state(self.module, self.communicator)
        decorrelate_generators(generators, self.rank)
        return self

    def _reducer_for(self, buffer):
        if self._reducer is None:
            self._reducer = self.communicator
            if get_array_module(buffer) is not np and self.size > 1:
                from minicnn.distributed import nccl
                if nccl.available():
                    self._reducer = nccl.NcclReducer(self.communicator)
        return self._reducer

    def after_backward(self, stop_requested=False):
        """Average every gradient over the ranks (between ``backward`` and ``step``).

        ``stop_requested`` is this rank's wish to stop (Ctrl-C seen); the result is True
        when any rank wished it, the same on all ranks.
        """
        if self.size == 1:
            return bool(stop_requested)
        parameters = [p for p in self.module.parameters() if p.requires_grad]
        if self._buckets is None or not self._buckets.matches(parameters):
            self._buckets = GradientBuckets(parameters, self.bucket_bytes)
        reducer = self._reducer_for(self._buckets.buckets[0][1])
        return self._buckets.average(reducer, self.size, stop_requested)

    def shard(self, loader, remainder="pad"):
        """This rank's share of ``loader``: ``"pad"`` (the default) for training, where
        every rank must take the same number of steps; ``"uneven"`` for evaluation, where
        every sample must count exactly once (see ``shard_indices``)."""
        return DistributedLoader(loader, self.rank, self.size, remainder)

    def synchronize_buffers(self):
        average_buffers(self.module, self.communicator)

    def reduce_sums(self, values):
        """{name: Σ over ranks of value} for a dict of numbers, in one allreduce."""
        names = list(values)
        vector = np.array([float(values[n]) for n in names], dtype=np.float64)
        self.communicator.allreduce_(vector, what="allreduce of the metrics")
        return dict(zip(names, vector.tolist()))

    def reduce_means(self, means, count):
        """Combine per-rank means of ``count`` samples each into means over all samples:
        Σ_r count_r·mean_r / Σ_r count_r. ``None`` values pass through."""
        known = {k: v for k, v in means.items() if v is not None}
        sums = self.reduce_sums({**{k: v * count for k, v in known.items()},
                                 "__count__": count})
        total = sums.pop("__count__")
        return {k: (sums[k] / total if k in sums else None) for k in means}

    def main_process_first(self, timeout=3600.0):
        """Rank 0 runs the block first, then the others (``comm.main_process_first``)."""
        return _comm.main_process_first(self.communicator, timeout)
