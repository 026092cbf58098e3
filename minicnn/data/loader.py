"""``DataLoader``: batches from in-memory arrays, seeded shuffling, background prefetch.

    loader = DataLoader(train, batch_size=128, shuffle=True, transform=t, seed=0)
    for epoch in range(epochs):
        for images, labels in loader.batches(epoch):
            ...

Randomness that can be replayed
-------------------------------
Every random choice a loader makes is drawn from a generator *derived from*
``(seed, epoch)`` (the shuffle) or ``(seed, epoch, batch index)`` (that batch's
augmentation), through NumPy's ``SeedSequence`` spawn keys. Nothing depends on how many
numbers were drawn before, so

* a run resumed at epoch 7, batch 120 sees exactly the batches the uninterrupted run saw
  (``loader.batches(7, start=120)``), and
* a background thread may prepare batches ahead without changing what they contain.

Prefetch
--------
With ``prefetch=k > 0`` a background thread prepares up to k batches ahead while the
main thread trains on the current one. NumPy releases the GIL inside its array loops and
copies, so the gather, augmentation and normalisation overlap with the step.
"""
import queue
import threading

import numpy as np


def _generator(seed, *key):
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


_SHUFFLE, _BATCH = 0, 1   # spawn-key tags keep the two kinds of stream apart


class DataLoader:
    """Batches ``(images, labels)`` from an ``ArrayDataset`` (or an (images, labels) pair).

    images are gathered with one fancy index per batch and passed through ``transform``
    (``t(uint8 batch, rng) -> float batch``, see ``minicnn.data.transforms``); labels come
    out as int64 arrays. ``drop_last`` drops the final short batch (batch-norm cannot
    normalise a batch of one).
    """

    def __init__(self, dataset, batch_size=128, shuffle=False, drop_last=False, transform=None,
                 seed=0, prefetch=0):
        images, labels = (dataset.images, dataset.labels) if hasattr(dataset, "images") else dataset
        if len(images) != len(labels):
            raise ValueError(f"DataLoader: {len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be at least 1, got {batch_size}")
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), shuffle, drop_last
        self.transform, self.seed, self.prefetch = transform, seed, prefetch
        self._next_epoch = 0

    def __len__(self):
        """Number of batches per epoch."""
        full, rest = divmod(len(self.labels), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    @property
    def num_samples(self):
        """Samples served per epoch (fewer than the dataset with ``drop_last``)."""
        return min(len(self) * self.batch_size, len(self.labels))

    def order(self, epoch):
        """The sample indices of ``epoch`` in the order they are served."""
        if not self.shuffle:
            return np.arange(len(self.labels))
        return _generator(self.seed, epoch, _SHUFFLE).permutation(len(self.labels))

    def batch(self, epoch, index, order=None):
        """Batch ``index`` of ``epoch``: gathered, transformed, as (images, labels)."""
        order = self.order(epoch) if order is None else order
        chosen = order[index * self.batch_size:(index + 1) * self.batch_size]
        images, labels = self.images[chosen], self.labels[chosen]
        if self.transform is not None:
            images = self.transform(images, _generator(self.seed, epoch, _BATCH, index))
        return images, labels

    def batches(self, epoch=0, start=0):
        """Iterate over the batches of ``epoch`` from batch ``start`` on."""
        order = self.order(epoch)
        produce = (self.batch(epoch, i, order) for i in range(start, len(self)))
        return _prefetched(produce, self.prefetch) if self.prefetch else produce

    def __iter__(self):
        """Like PyTorch: each ``for`` over the loader is the next epoch."""
        epoch, self._next_epoch = self._next_epoch, self._next_epoch + 1
        return iter(self.batches(epoch))


_END = object()


class _Failure:
    def __init__(self, error):
        self.error = error


def _prefetched(iterator, depth):
    """Run ``iterator`` in a background thread, keeping up to ``depth`` items ready.

    The consumer may stop early (``break``, an exception, Ctrl-C): closing this generator
    sets ``stop``, and the producer, which only ever waits with a timeout, notices and ends.
    An exception in the producer is re-raised in the consumer.
    """
    ready = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_END)
        except BaseException as error:   # handed to the consumer, which re-raises it
            put(_Failure(error))

    thread = threading.Thread(target=produce, name="minicnn-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
