"""The training and evaluation loop every architecture's command line uses.

    model = architectures.create("lenet5", num_classes=10, in_channels=1)
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    history = fit(model, optimizer, train_loader, test_loader, epochs=4,
                  schedule=make_schedule("cosine", optimizer, 4, len(train_loader)),
                  checkpoint="runs/lenet5.npz")

One step of training is the four lines every framework has (``train_step``)::

    logits = model(images)                        # forward: builds the graph
    loss = cross_entropy(logits, labels)          # one number
    optimizer.zero_grad(); loss.backward()        # d loss / d every parameter
    optimizer.step()                              # move against the gradient

and the loop around it (``TrainingLoop.run``) is a screen long. Everything else is a
callback (``minicnn.callbacks`` holds the protocol): the bookkeeping below that makes a
run *safe to leave alone* (``Checkpointing``, ``StopOnSignal``, ``DivergenceCheck``,
``ProgressBar``, ``DataParallelTraining``, all in this file), and the papers' techniques
you add with ``fit(..., callbacks=[...])`` (gradient clipping, EMA, mixup).

Nothing lost
    After every epoch a checkpoint is written atomically (temporary file, then rename):
    weights and buffers, optimizer and schedule state, the epoch and batch reached,
    the metrics so far, and the state of every random generator the run draws from.
    Ctrl-C (or SIGTERM, what ``timeout`` and batch schedulers send) asks the loop to stop
    after the current batch; it saves the same checkpoint (now in the middle of an epoch)
    and raises ``TrainingInterrupted``. A second one stops at once without saving (the
    checkpoint on disk is the last complete one: writes are atomic). Temporaries left by
    a run that was killed outright (``kill -9``) are removed when the next run starts.

Nothing broken kept
    A loss, test loss or weight that stops being finite ends the run with
    ``TrainingDiverged`` (a ``FloatingPointError``) naming the likely cause — the data when
    the batch itself holds NaN or infinity, the step size otherwise — before anything is
    saved: the checkpoint on disk stays the last good one.

Exact resumption
    ``fit(..., resume=checkpoint)`` continues where the checkpoint left off, producing
    the same weights, bit for bit, as a run that was never interrupted. The checkpoint
    gives the *progress* (weights, optimizer buffers, the schedule's step, epoch, batch,
    generators); the optimizer and schedule passed in give the *settings* (learning rate,
    momentum, weight decay, the schedule's shape and length), so a resumed run may change
    them and the schedule continues from the same step on its new curve. The loader's
    shuffling and augmentation are functions of (seed, epoch, batch) (see
    ``minicnn.data.loader``), the generators the model draws from (dropout; the registry
    in ``minicnn.random``) and the callbacks' state (EMA's averages) are restored from
    the checkpoint, and the running sums of the interrupted epoch are restored too so its
    summary line is the same.

What you see
    A tqdm progress bar per epoch (running loss, accuracy and images/s) on stderr, one
    summary line per epoch on stdout, and the metrics history as CSV and JSON beside the
    checkpoint (``run.npz`` → ``run.history.csv``, ``run.history.json``).
"""
import csv
import io
import json
import math
import os
import signal
import sys
import threading
import time

from minicnn import functional as F
from minicnn.backend import get_array_module, to_device
from minicnn.callbacks import Callback
from minicnn.files import atomic_write
from minicnn.kernels.threads import kernel_threads_only
from minicnn.split_training import split_backward, split_reason
from minicnn.schedules import SCHEDULE_HELP, make_schedule  # noqa: F401 (public)
from minicnn.random import generators, random_state, set_random_state  # noqa: F401 (public)
from minicnn.tensor import Tensor, no_grad

CHECKPOINT_KIND = "minicnn-training"


class TrainingInterrupted(Exception):
    """Raised by ``fit`` after Ctrl-C, once the checkpoint (if any) is saved."""

    def __init__(self, checkpoint, epoch, batch, signum=None):
        self.checkpoint, self.epoch, self.batch = checkpoint, epoch, batch
        self.signum = signum                     # the signal that asked: SIGINT, SIGTERM
        where = f"epoch {epoch + 1}, batch {batch}"
        saved = f"; checkpoint saved to {checkpoint}" if checkpoint else "; nothing saved"
        by = "" if signum in (None, signal.SIGINT) else f" by {signal.Signals(signum).name}"
        super().__init__(f"training interrupted{by} at {where}{saved}")


class TrainingDiverged(FloatingPointError):
    """Raised by ``fit`` when the loss, the test loss or a weight is no longer finite;
    nothing was saved after it happened."""


# ----------------------------------------------------------------------------- optimizers

def make_optimizer(name, parameters, lr, momentum=0.9, weight_decay=0.0, **options):
    """The optimizer called ``name`` (sgd, adam, adamw, rmsprop) over ``parameters``.

    ``momentum`` applies to SGD and RMSProp; ``options`` go to the constructor as they are
    (e.g. ``alpha=0.9, eps=1.0`` for Inception-v3's RMSProp).
    """
    from minicnn import optim
    parameters = [p for p in parameters if p.requires_grad]
    if name == "sgd":
        return optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay, **options)
    if name == "adam":
        return optim.Adam(parameters, lr=lr, weight_decay=weight_decay, **options)
    if name == "adamw":
        return optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, **options)
    if name == "rmsprop":
        return optim.RMSProp(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay,
                             **options)
    raise ValueError(f"unknown optimizer {name!r}; choose from sgd, adam, adamw, rmsprop")


# ----------------------------------------------------------------------------- one step

def _model_device(model):
    for p in model.parameters():
        return p.device
    return "cpu"


def soft_cross_entropy(logits, targets, label_smoothing=0.0):
    """Cross-entropy against target *distributions* q (float (N, classes), rows summing
    to 1, e.g. mixup's blends): mean over the batch of −Σₖ qₖ·log softmax(z)ₖ, with q
    smoothed to (1 − ε)·q + ε/K first. For one-hot q it equals ``F.cross_entropy``."""
    xp = get_array_module(targets)
    classes = targets.shape[1]
    q = (1.0 - label_smoothing) * targets + label_smoothing / classes
    log_p = F.log_softmax(logits, axis=1)
    return -(log_p * Tensor(xp.asarray(q, dtype=logits.data.dtype))).sum(axis=1).mean()


def _check_targets(labels, logits):
    if labels.ndim == 2 and labels.shape != logits.shape:
        raise ValueError(f"compute_loss: soft targets of shape {tuple(labels.shape)} for "
                         f"logits of shape {tuple(logits.shape)}; expected the same shape")
    if labels.ndim == 2 and labels.dtype.kind != "f":
        raise ValueError(f"compute_loss: soft targets must be floating-point probabilities, "
                         f"got {labels.dtype}")


def compute_loss(outputs, labels, label_smoothing=0.0, aux_weight=0.3):
    """Cross-entropy of the logits; a model that also returns auxiliary classifiers'
    logits in training (GoogLeNet, Inception-v3: ``(main, aux1, ...)``) adds them with
    weight ``aux_weight`` (GoogLeNet's 0.3; a model may set ``aux_loss_weight``).

    ``labels`` are class indices (N,) or soft targets, float (N, classes) probabilities
    (``soft_cross_entropy``; mixup). Returns (loss, main logits)."""
    if isinstance(outputs, (tuple, list)):
        main, auxiliary = outputs[0], outputs[1:]
    else:
        main, auxiliary = outputs, ()
    _check_targets(labels, main)
    def loss_of(logits):
        if labels.ndim == 2:
            return soft_cross_entropy(logits, labels, label_smoothing)
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    loss = loss_of(main)
    for aux in auxiliary:
        loss = loss + aux_weight * loss_of(aux)
    return loss, main


def evaluate(model, loader, device=None, label_smoothing=0.0):
    """Mean loss, top-1 and top-5 accuracy of ``model`` over every batch of ``loader``.

    Runs in eval mode (dropout off, batch norm on running statistics) without building a
    graph; restores the model's previous mode afterwards.
    """
    device = device or _model_device(model)
    was_training = model.training
    model.eval()
    loss_sum, top1, top5, seen = 0.0, 0, 0, 0
    try:
        with no_grad(), kernel_threads_only():
            for images, labels in loader.batches(0):
                x = Tensor(to_device(images, device))
                y = to_device(labels, device)
                logits = model(x)
                if isinstance(logits, (tuple, list)):
                    logits = logits[0]
                loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing,
                                       reduction="sum")
                loss_sum += float(loss.item())
                hits1, hits5 = F.topk_correct(logits, y, ks=(1, 5))
                top1, top5, seen = top1 + hits1, top5 + hits5, seen + len(labels)
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("evaluate: the loader produced no samples")
    return {"loss": loss_sum / seen, "accuracy": top1 / seen, "top5": top5 / seen}


class NonFiniteLoss(FloatingPointError):
    """Raised by ``train_step`` before the update when the loss is NaN or infinite."""

    def __init__(self, value):
        super().__init__(f"the loss became {value}")
        self.value = value


def train_step(model, optimizer, images, labels, label_smoothing=0.0, aux_weight=0.3,
               schedule=None, after_backward=None):
    """One step of training: the four lines of the module doc, plus what makes them safe.

    The loss is checked *before* the update, so a NaN never reaches the weights
    (``NonFiniteLoss``); ``after_backward()`` runs between the gradient and the update
    (data parallel training averages the gradients there). Returns the loss as a float
    and the number of images classified correctly (for soft targets: whose most likely
    class is the target's most probable one).

    A network whose samples never meet in training (no batch norm, no dropout: LeNet-5)
    runs the batch in shares, one per core, each the whole forward and backward
    (``minicnn.split_training``; ``split_reason`` says why another runs whole): LeNet-5's
    training step at batch 64 / 128 / 256 went from 13.0k / 13.8k / 13.8k to 15.7k /
    19.8k / 22.3k images/s on two cores (AMD EPYC, OpenBLAS SkylakeX kernels).
    """
    with kernel_threads_only():         # BLAS's own threads would spin beside the kernels
        return _train_step(model, optimizer, images, labels, label_smoothing, aux_weight,
                           schedule, after_backward)


def _train_step(model, optimizer, images, labels, label_smoothing, aux_weight, schedule,
                after_backward):
    images = images if isinstance(images, Tensor) else Tensor(images)
    if images.requires_grad or split_reason(model, images.data) is not None:
        loss, logits = compute_loss(model(images), labels, label_smoothing, aux_weight)
        value, scores, backward = float(loss.item()), logits.data, loss.backward
    else:       # the batch in shares, one per core (minicnn.split_training)
        def loss_of(share, first, last):
            loss, logits = compute_loss(model(share), labels[first:last], label_smoothing,
                                        aux_weight)
            return loss, logits.data
        value, scores, gradients = split_backward(images.data, loss_of)
        scores = get_array_module(scores[0]).concatenate(scores)

        def backward():                 # the shares' gradients, computed already
            for leaf, gradient in gradients:
                leaf._accumulate(gradient)
    if not math.isfinite(value):
        raise NonFiniteLoss(value)
    optimizer.zero_grad()
    backward()
    if after_backward is not None:
        after_backward()
    optimizer.step()
    if schedule is not None:
        schedule.step()
    xp = get_array_module(scores)
    classes = labels.argmax(axis=1) if labels.ndim == 2 else labels
    return value, int(xp.count_nonzero(scores.argmax(axis=1) == classes))


# ----------------------------------------------------------------------------- checkpoints

def history_paths(checkpoint):
    stem = os.path.splitext(os.fspath(checkpoint))[0]
    return stem + ".history.csv", stem + ".history.json"


def _write_text_atomically(path, text):
    atomic_write(path, lambda f: f.write(text.encode()))


def write_history(checkpoint, history):
    """The per-epoch metrics as CSV (for spreadsheets) and JSON (for programs)."""
    csv_path, json_path = history_paths(checkpoint)
    if history:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
        _write_text_atomically(csv_path, out.getvalue())
    elif os.path.exists(csv_path):   # an earlier run's (under --overwrite): not this run's
        os.remove(csv_path)
    _write_text_atomically(json_path, json.dumps(history, indent=1) + "\n")


def save_training_checkpoint(path, model, optimizer, schedule, progress, metadata=None):
    """Everything needed to continue training (see module doc), written atomically."""
    from minicnn.optim import save_checkpoint
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_checkpoint(path, kind=CHECKPOINT_KIND, model=model.state_dict(),
                    optimizer=optimizer.state_dict() if optimizer is not None else None,
                    schedule=schedule.state_dict() if schedule is not None else None,
                    progress=progress, random=random_state(model), meta=metadata or {})


def load_training_checkpoint(path):
    """Read a checkpoint written by ``fit``; ValueError when it is anything else."""
    from minicnn.optim import load_checkpoint
    state = load_checkpoint(path)
    if not isinstance(state, dict) or state.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{path}: not a minicnn training checkpoint")
    return state


def restore(state, model, optimizer=None, schedule=None):
    """Load a checkpoint's progress; returns its ``progress`` dict (epoch, batch, history,
    running sums).

    Progress is the weights and buffers, the optimizer's per-parameter state (momentum,
    Adam's moments), the schedule's step count and the random generators. The settings
    stay those ``optimizer`` and ``schedule`` were built with (learning rate, momentum,
    weight decay, the schedule's base rate and length): a resumed run takes what it is
    told now, and the schedule continues from the saved step on the curve it describes.
    """
    model.load_state_dict(state["model"])
    if optimizer is not None and state.get("optimizer") is not None:
        settings = [{k: v for k, v in group.items() if k != "params"}
                    for group in optimizer.param_groups]
        optimizer.load_state_dict(state["optimizer"])
        for group, own in zip(optimizer.param_groups, settings):
            group.update(own)
    if schedule is not None and state.get("schedule") is not None:
        schedule.load_state_dict({**schedule.state_dict(),
                                  "step_count": state["schedule"]["step_count"]})
    set_random_state(model, state.get("random") or {})
    return state["progress"]


def _finite(array):
    xp = get_array_module(array)
    return bool(xp.isfinite(array).all())


def _position(epoch, batch):
    """A checkpoint's place in words: ``epoch`` epochs done, then ``batch`` batches."""
    return f"epoch {epoch + 1}, batch {batch}" if batch else f"after epoch {epoch}"


def _divergence(what, where, images, optimizer, checkpoint, saved_epoch):
    """The message for a value that stopped being finite: its likely cause and what the
    user still has."""
    if images is not None and not _finite(images):
        cause = ("the input batch itself holds NaN or infinite values: check the data "
                 "(and its normalisation: a channel with zero spread divides by zero)")
    else:
        cause = (f"the step size is probably too large (learning rate "
                 f"{optimizer.param_groups[0]['lr']:.4g}): try a lower --lr")
    if checkpoint is None:
        kept = "nothing was saved"
    elif saved_epoch is None:
        kept = f"nothing was saved to {checkpoint}"
    else:
        kept = f"the last good checkpoint ({checkpoint}, {saved_epoch}) was kept"
    return f"{what} at {where}; {cause}; {kept}"


class StopRequests:
    """While active, the first SIGINT (Ctrl-C) or SIGTERM (``timeout``, batch schedulers)
    only raises a flag: the loop stops at the next batch boundary, where the state is
    consistent, and saves. A second one interrupts at once (KeyboardInterrupt).
    ``on_request(signum)`` is told of the first."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None))
                    if s is not None)

    def __init__(self, log, on_request=None):
        self.requested, self.log, self.previous, self.signum = False, log, {}, None
        self.on_request = on_request

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        self.log(f"\n{name}: stopping after this batch and saving a checkpoint "
                 "(press Ctrl-C again to quit without saving)")
        if self.on_request is not None:
            self.on_request(signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)
        self.previous = {}


# ----------------------------------------------------------------------------- the loop

def _fresh_running():
    """The running sums of an epoch: what its progress bar and summary line show."""
    return {"loss_sum": 0.0, "correct": 0, "seen": 0, "time_s": 0.0}


def _summary_line(record, epochs):
    width = len(str(epochs))
    line = (f"epoch {record['epoch']:>{width}}/{epochs}  train loss {record['train_loss']:.4f} "
            f"acc {100 * record['train_accuracy']:.2f}%")
    if record.get("test_loss") is not None:
        line += (f"  test loss {record['test_loss']:.4f} "
                 f"acc {100 * record['test_accuracy']:.2f}%")
    return line + (f"  lr {record['lr']:.4g}  {record['time_s']:.1f} s  "
                   f"{record['images_per_s']:.0f} img/s")


class TrainingLoop:
    """One run of ``fit``: its parts, where it has got to, and the loop itself.

    Callbacks (``minicnn.callbacks``) read and change what they need through it:
    ``model``, ``optimizer``, ``schedule``, ``train_loader``, ``test_loader``, ``epochs``,
    ``device``, ``log``; the position ``epoch`` and ``batch`` (batches done in the epoch)
    of ``steps`` per epoch; ``history``; ``running`` (the epoch's sums so far);
    ``evaluation`` (this epoch's test metrics); ``stop_requested``.
    """

    def __init__(self, model, optimizer, train_loader, test_loader, epochs, callbacks, *,
                 schedule=None, label_smoothing=0.0, device=None, checkpoint=None, log=print):
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.train_loader, self.test_loader, self.epochs = train_loader, test_loader, epochs
        self.callbacks, self.label_smoothing, self.log = list(callbacks), label_smoothing, log
        self.device = device or _model_device(model)
        self.aux_weight = getattr(model, "aux_loss_weight", 0.3)
        self.steps = len(train_loader)
        self.epoch, self.batch, self.history = 0, 0, []
        self.running, self.evaluation = _fresh_running(), None
        self.stop_requested, self.stop_signal = False, None
        self.checkpoint, self.saved_at = checkpoint, None    # saved_at: where, in words
        self._resumed_states = {}

    # -- the loop: what every run does, on one screen
    def run(self):
        try:
            self._each("on_fit_start")
            self._load_callback_states()
            for epoch in range(self.epoch, self.epochs):
                self.train_epoch(epoch)
                if self.stop_requested and self.batch < self.steps:
                    raise TrainingInterrupted(self.checkpoint, epoch, self.batch, self.stop_signal)
                self.end_epoch(epoch)
                if self.stop_requested:   # during the last batch or the evaluation
                    raise TrainingInterrupted(self.checkpoint, epoch + 1, 0, self.stop_signal)
        finally:
            self._each("on_fit_end")
        return self.history

    def train_epoch(self, epoch):
        """The epoch's batches from ``self.batch`` on (0, or where a resumed run stopped)."""
        self.epoch, self.evaluation = epoch, None
        if self.batch == 0:
            self.running = _fresh_running()
        self._each("on_epoch_start", epoch)
        began, time_before = time.perf_counter(), self.running["time_s"]
        for images, labels in self.train_loader.batches(epoch, start=self.batch):
            loss, correct = self.step(images, labels)
            self.running["loss_sum"] += loss * len(labels)
            self.running["correct"] += correct
            self.running["seen"] += len(labels)
            self.running["time_s"] = time_before + time.perf_counter() - began
            self.batch += 1
            self._each("on_batch_end", epoch, self.batch, loss)
            if self.stop_requested:
                break
        self._each("on_train_epoch_end", epoch)

    def step(self, images, labels):
        """One training step on a batch the callbacks may have changed (see ``train_step``)."""
        for callback in self.callbacks:
            images, labels = callback.on_batch(self, images, labels)
        x, y = Tensor(to_device(images, self.device)), to_device(labels, self.device)
        try:
            return train_step(self.model, self.optimizer, x, y, self.label_smoothing,
                              self.aux_weight, self.schedule,
                              after_backward=lambda: self._each("after_backward"))
        except NonFiniteLoss as bad:
            raise self.diverged(f"the loss became {bad.value}",
                                f"epoch {self.epoch + 1}, batch {self.batch + 1}", x.data) from None

    def end_epoch(self, epoch):
        """The epoch's record: training figures, then the evaluation, then the callbacks'."""
        record = self.training_record(epoch)
        if self.test_loader is not None:
            self._each("before_evaluate")
            self.evaluation = evaluate(self.model, self.test_loader, self.device)
            self._each("after_evaluate")
            record.update(test_loss=self.evaluation["loss"],
                          test_accuracy=self.evaluation["accuracy"],
                          test_top5=self.evaluation["top5"])
        self.history.append(record)
        self.running, self.batch = _fresh_running(), 0
        self._each("on_epoch_end", epoch, record)
        self.log(_summary_line(record, self.epochs))

    def training_record(self, epoch):
        running = self.running
        return {"epoch": epoch + 1,
                "train_loss": running["loss_sum"] / max(running["seen"], 1),
                "train_accuracy": running["correct"] / max(running["seen"], 1),
                "test_loss": None, "test_accuracy": None, "test_top5": None,
                "lr": float(self.optimizer.param_groups[0]["lr"]),
                "time_s": running["time_s"],
                "images_per_s": running["seen"] / max(running["time_s"], 1e-9)}

    # -- what callbacks call
    def request_stop(self, signum=None):
        """End the run at the next batch boundary, with a checkpoint."""
        self.stop_requested, self.stop_signal = True, signum

    def diverged(self, what, where, images=None):
        """The ``TrainingDiverged`` to raise when ``what`` stopped being finite."""
        return TrainingDiverged(_divergence(what, where, images, self.optimizer,
                                            self.checkpoint, self.saved_at))

    def callback_states(self):
        """{state key: state} of every callback with state to keep (see ``Callback``)."""
        return {key: state for key, callback in self._keyed_callbacks()
                if (state := callback.state_dict())}

    # -- resuming
    def resume_from(self, resume):
        """Continue from a checkpoint (a path or ``load_training_checkpoint``'s dict)."""
        if isinstance(resume, (str, os.PathLike)):
            resume = load_training_checkpoint(resume)
        progress = restore(resume, self.model, self.optimizer, self.schedule)
        self.epoch, self.batch = int(progress["epoch"]), int(progress["batch"])
        self.history, self.running = list(progress["history"]), dict(progress["running"])
        self.saved_at = _position(self.epoch, self.batch)
        self._resumed_states = progress.get("callbacks") or {}

    def _load_callback_states(self):
        for key, callback in self._keyed_callbacks():
            if key in self._resumed_states:
                callback.load_state_dict(self._resumed_states[key])

    def _keyed_callbacks(self):
        seen = {}
        for callback in self.callbacks:
            key = callback.state_key or type(callback).__name__
            seen[key] = seen.get(key, 0) + 1
            yield (key if seen[key] == 1 else f"{key}.{seen[key]}"), callback

    def _each(self, hook, *arguments):
        for callback in self.callbacks:
            getattr(callback, hook)(self, *arguments)


# ----------------------------------------------------------------------------- the plumbing

class ProgressBar(Callback):
    """A tqdm bar per epoch on stderr: running loss, accuracy and images/s."""

    def __init__(self):
        self.bar = None

    def on_epoch_start(self, loop, epoch):
        from tqdm import tqdm
        self.bar = tqdm(total=loop.steps, initial=loop.batch,
                        desc=f"epoch {epoch + 1}/{loop.epochs}", unit="batch", leave=False,
                        dynamic_ncols=True, file=sys.stderr, mininterval=0.25)

    def on_batch_end(self, loop, epoch, batch, loss):
        running = loop.running
        self.bar.set_postfix_str(
            f"loss {running['loss_sum'] / running['seen']:.4f} "
            f"acc {100 * running['correct'] / running['seen']:.2f}% "
            f"{running['seen'] / max(running['time_s'], 1e-9):.0f} img/s", refresh=False)
        self.bar.update(1)

    def on_train_epoch_end(self, loop, epoch):
        self.on_fit_end(loop)

    def on_fit_end(self, loop):
        if self.bar is not None:
            self.bar.refresh()    # the epoch's final running figures, however fast it was
            self.bar.close()
            self.bar = None


class StopOnSignal(Callback):
    """Ctrl-C or SIGTERM asks the loop to stop at the next batch boundary (see
    ``StopRequests``); a second one quits at once."""

    def on_fit_start(self, loop):
        say = lambda message: print(message, file=sys.stderr, flush=True)   # noqa: E731
        self.requests = StopRequests(say, on_request=loop.request_stop).__enter__()

    def on_fit_end(self, loop):
        self.requests.__exit__(None, None, None)


class CallEachBatch(Callback):
    """``fit``'s ``on_batch_end=f``: ``f(epoch, batch, loss)`` after each step."""

    def __init__(self, function):
        self.function = function

    def on_batch_end(self, loop, epoch, batch, loss):
        self.function(epoch, batch, loss)


class DivergenceCheck(Callback):
    """A weight or test loss that is no longer finite ends the run (``TrainingDiverged``)
    before anything is saved. (The loss itself is checked in ``train_step``, before the
    update.)"""

    def on_train_epoch_end(self, loop, epoch):
        for name, parameter in loop.model.named_parameters():
            if not _finite(parameter.data):
                raise loop.diverged(f"the weight {name} is no longer finite",
                                    f"epoch {epoch + 1}, batch {loop.batch}")

    def after_evaluate(self, loop):
        if not math.isfinite(loop.evaluation["loss"]):
            raise loop.diverged(f"the test loss became {loop.evaluation['loss']}",
                                f"the end of epoch {loop.epoch + 1}")


class Checkpointing(Callback):
    """The training checkpoint after every epoch and when a stop is requested in the middle
    of one, with the history CSV/JSON beside it (see the module doc)."""

    def __init__(self, path, metadata=None):
        self.path, self.metadata = path, metadata

    def on_fit_start(self, loop):        # what a run killed outright left behind
        from minicnn.files import remove_stale_temporaries
        remove_stale_temporaries(self.path, *history_paths(self.path))

    def on_train_epoch_end(self, loop, epoch):
        if loop.stop_requested and loop.batch < loop.steps:
            self.save(loop, epoch, loop.batch)

    def on_epoch_end(self, loop, epoch, record):
        self.save(loop, epoch + 1, 0)

    def save(self, loop, epoch, batch):
        progress = {"epoch": epoch, "batch": batch, "history": loop.history,
                    "running": dict(loop.running)}
        states = loop.callback_states()
        if states:
            progress["callbacks"] = states
        save_training_checkpoint(self.path, loop.model, loop.optimizer, loop.schedule,
                                 progress, self.metadata)
        write_history(self.path, loop.history)
        loop.saved_at = _position(epoch, batch)


class DataParallelTraining(Callback):
    """Data-parallel training over MPI ranks (``minicnn.distributed.DataParallel``): the
    same start on every rank, gradients averaged before each update (and a stop request
    shared: any rank's Ctrl-C stops all), the epoch's sums and the test metrics combined
    over the ranks, batch-norm statistics made equal."""

    def __init__(self, distributed):
        self.distributed = distributed

    def on_fit_start(self, loop):
        self.distributed.prepare(generators=generators(loop.model).values())
        if not self.distributed.is_main_process:   # a checkpoint's sums are all ranks': count once
            loop.running.update(loss_sum=0.0, correct=0, seen=0)

    def after_backward(self, loop):
        if self.distributed.after_backward(loop.stop_requested) and not loop.stop_requested:
            loop.request_stop()

    def on_train_epoch_end(self, loop, epoch):
        loop.running.update(self.distributed.reduce_sums(
            {k: loop.running[k] for k in ("loss_sum", "correct", "seen")}))
        self.distributed.synchronize_buffers()

    def after_evaluate(self, loop):
        loop.evaluation = self.distributed.reduce_means(loop.evaluation,
                                                        loop.test_loader.num_samples)


def fit(model, optimizer, train_loader, test_loader=None, epochs=1, *, schedule=None,
        label_smoothing=0.0, device=None, checkpoint=None, metadata=None, resume=None,
        progress=True, log=print, on_batch_end=None, distributed=None, callbacks=()):
    """Train ``model`` for ``epochs`` epochs; return the history (one dict per epoch).

    ``schedule``       a learning-rate schedule stepped after every iteration, or None;
    ``checkpoint``     path of the checkpoint written after every epoch and on Ctrl-C
                       (with the history CSV/JSON beside it); None: no files;
    ``metadata``       a dict stored in the checkpoint (architecture, dataset, ...);
    ``resume``         a checkpoint (path or ``load_training_checkpoint`` dict) to continue;
    ``on_batch_end``   called as ``f(epoch, batch, loss)`` after each step (tests, logging);
    ``distributed``    a ``minicnn.distributed.DataParallel`` for data-parallel training
                       over MPI ranks; the loaders are then this rank's shards
                       (``distributed.shard``). Gradients are averaged before each step,
                       metrics summed over the ranks, and only the main rank logs, shows
                       progress and writes files;
    ``callbacks``      more ``minicnn.callbacks.Callback`` objects (clipping, EMA, mixup,
                       your own), called after the built-in ones in the order given.

    Raises ``TrainingInterrupted`` after Ctrl-C or SIGTERM, and ``TrainingDiverged`` (a
    ``FloatingPointError``) when the loss, the test loss or a weight stops being finite
    (a learning rate too high, usually); the checkpoint then stays the last good one.
    """
    main = distributed is None or distributed.is_main_process
    plumbing = [ProgressBar()] if progress and main else []
    plumbing.append(StopOnSignal())
    if distributed is not None:       # first: the averaged gradient is what others see
        plumbing.append(DataParallelTraining(distributed))
    if on_batch_end is not None:
        plumbing.append(CallEachBatch(on_batch_end))
    last = [DivergenceCheck()]        # before the checkpoint: never save NaN weights
    if checkpoint is not None and main:
        last.append(Checkpointing(checkpoint, metadata))
    loop = TrainingLoop(model, optimizer, train_loader, test_loader, epochs,
                        plumbing + list(callbacks) + last, schedule=schedule,
                        label_smoothing=label_smoothing, device=device, checkpoint=checkpoint,
                        log=log if main else (lambda line: None))
    if resume is not None:
        loop.resume_from(resume)
    return loop.run()
