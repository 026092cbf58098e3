"""The training and evaluation loop every architecture's command line uses.

    model = architectures.create("lenet5", num_classes=10, in_channels=1)
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    history = fit(model, optimizer, train_loader, test_loader, epochs=4,
                  schedule=make_schedule("cosine", optimizer, 4, len(train_loader)),
                  checkpoint="runs/lenet5.npz")

One step of training is the four lines every framework has::

    logits = model(images)                        # forward: builds the graph
    loss = cross_entropy(logits, labels)          # one number
    optimizer.zero_grad(); loss.backward()        # d loss / d every parameter
    optimizer.step()                              # move against the gradient

Everything else here is bookkeeping that makes a run *safe to leave alone*:

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
    ``minicnn.data.loader``), the model's own generators (dropout) are restored from the
    checkpoint, and the running sums of the interrupted epoch are restored too so its
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

import numpy as np

from minicnn import functional as F
from minicnn.backend import get_array_module, to_device
from minicnn.files import atomic_write
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


SCHEDULE_HELP = (
    "constant (fixed); cosine (half a cosine down to 0 over the run); step:N[:G] (×G, "
    "default 0.1, every N epochs); multistep:A,B,...[:G] (×G at epochs A, B, ...); "
    "exponential:G (×G per epoch); decay:E:G (×G every E epochs, EfficientNet's "
    "decay:2.4:0.97); warmup:W+S (linear warm-up over W epochs, then schedule S)")


def _schedule_number(text, role):
    """A number of a schedule spec: ``role`` "epochs" (a finite time > 0) or "factor" (a
    multiplier in (0, 1]: a schedule that grows the rate without end is a typo)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if role == "factor" and not 0 < value <= 1:
        raise ValueError(f"the factor must lie in (0, 1], got {text}")
    if role == "epochs" and not (math.isfinite(value) and value > 0):
        raise ValueError(f"a number of epochs must be finite and positive, got {text}")
    return value


def make_schedule(spec, optimizer, epochs, steps_per_epoch):
    """A learning-rate schedule from a short spec (see ``SCHEDULE_HELP``), or None.

    Every schedule is stepped after each iteration (``steps_per_epoch`` steps make an
    epoch): smooth ones then change smoothly, staircase ones still change at exactly the
    epoch (or fraction of an epoch) they name. Every number is checked: periods finite and
    positive, factors in (0, 1].
    """
    from minicnn import optim
    spec = (spec or "constant").strip()
    epochs_of, factor = (lambda text: _schedule_number(text, "epochs"),
                         lambda text: _schedule_number(text, "factor"))
    try:
        if spec.startswith("warmup:"):
            warmup, _, rest = spec[len("warmup:"):].partition("+")
            if rest.startswith("warmup:"):
                raise ValueError("one warm-up is enough")
            inner = make_schedule(rest or "constant", optimizer, epochs, steps_per_epoch)
            if inner is None:
                inner = optim.StepLR(optimizer, step_size=10 ** 9, gamma=1.0,
                                     steps_per_epoch=steps_per_epoch)
            return optim.LinearWarmup(inner, warmup_epochs=epochs_of(warmup))
        name, _, arguments = spec.partition(":")
        values = arguments.split(":") if arguments else []
        if name == "constant" and not values:
            return None
        if name == "cosine" and not values:
            return optim.CosineAnnealingLR(optimizer, T_max=epochs, steps_per_epoch=steps_per_epoch)
        if name == "step" and 1 <= len(values) <= 2:
            gamma = factor(values[1]) if len(values) > 1 else 0.1
            return optim.StepLR(optimizer, step_size=epochs_of(values[0]), gamma=gamma,
                                steps_per_epoch=steps_per_epoch)
        if name == "multistep" and 1 <= len(values) <= 2:
            gamma = factor(values[1]) if len(values) > 1 else 0.1
            milestones = [epochs_of(m) for m in values[0].split(",")]
            return optim.MultiStepLR(optimizer, milestones, gamma=gamma,
                                     steps_per_epoch=steps_per_epoch)
        if name == "exponential" and len(values) == 1:
            return optim.ExponentialLR(optimizer, gamma=factor(values[0]),
                                       steps_per_epoch=steps_per_epoch)
        if name == "decay" and len(values) == 2:
            return optim.DecayEveryNEpochs(optimizer, every=epochs_of(values[0]),
                                           decay=factor(values[1]), steps_per_epoch=steps_per_epoch)
    except ValueError as error:
        message = str(error)
        if message.startswith("schedule "):      # a nested warm-up's schedule said it
            raise
        raise ValueError(f"schedule {spec!r}: {message}") from None
    raise ValueError(f"unknown schedule {spec!r}; use one of: {SCHEDULE_HELP}")


# ----------------------------------------------------------------------------- one step

def _model_device(model):
    for p in model.parameters():
        return p.device
    return "cpu"


def compute_loss(outputs, labels, label_smoothing=0.0, aux_weight=0.3):
    """Cross-entropy of the logits; a model that also returns auxiliary classifiers'
    logits in training (GoogLeNet, Inception-v3: ``(main, aux1, ...)``) adds them with
    weight ``aux_weight`` (GoogLeNet's 0.3; a model may set ``aux_loss_weight``).
    Returns (loss, main logits)."""
    if isinstance(outputs, (tuple, list)):
        main, auxiliary = outputs[0], outputs[1:]
    else:
        main, auxiliary = outputs, ()
    loss = F.cross_entropy(main, labels, label_smoothing=label_smoothing)
    for aux in auxiliary:
        loss = loss + aux_weight * F.cross_entropy(aux, labels, label_smoothing=label_smoothing)
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
        with no_grad():
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
    and the number of images classified correctly.
    """
    loss, logits = compute_loss(model(images), labels, label_smoothing, aux_weight)
    value = float(loss.item())
    if not math.isfinite(value):
        raise NonFiniteLoss(value)
    optimizer.zero_grad()
    loss.backward()
    if after_backward is not None:
        after_backward()
    optimizer.step()
    if schedule is not None:
        schedule.step()
    xp = get_array_module(logits.data)
    return value, int(xp.count_nonzero(logits.data.argmax(axis=1) == labels))


# ----------------------------------------------------------------------------- random state

def _generators(model):
    """Every NumPy random generator a training step may draw from, by a stable name:
    attributes of the model's modules (e.g. a Dropout's ``rng``), module-level generators
    of minicnn and the architectures (the default generators used when none is passed),
    and NumPy's legacy global generator."""
    found = {}
    for name, module in model.named_modules():
        for attribute, value in vars(module).items():
            if isinstance(value, np.random.Generator):
                found[f"model:{name}.{attribute}"] = value
    for module_name, module in sorted(sys.modules.items()):
        if module is None or not module_name.split(".")[0] in ("minicnn", "architectures"):
            continue
        for attribute, value in list(vars(module).items()):
            if isinstance(value, np.random.Generator):
                found[f"module:{module_name}.{attribute}"] = value
    return found


def random_state(model):
    state = {name: g.bit_generator.state for name, g in _generators(model).items()}
    state["numpy.random"] = list(np.random.get_state())
    return state


def set_random_state(model, state):
    for name, generator in _generators(model).items():
        if name in state:
            generator.bit_generator.state = state[name]
    if "numpy.random" in state:
        kind, keys, position, has_gauss, cached = state["numpy.random"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), int(position),
                             int(has_gauss), float(cached)))


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


def _first_non_finite_weight(model):
    for name, parameter in model.named_parameters():
        if not _finite(parameter.data):
            return name
    return None


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
    consistent, and saves. A second one interrupts at once (KeyboardInterrupt)."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None))
                    if s is not None)

    def __init__(self, log):
        self.requested, self.log, self.previous, self.signum = False, log, {}, None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        self.log(f"\n{name}: stopping after this batch and saving a checkpoint "
                 "(press Ctrl-C again to quit without saving)")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)


# ----------------------------------------------------------------------------- the loop

def _progress_bar(total, initial, description, enabled):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=description, unit="batch", leave=False,
                dynamic_ncols=True, file=sys.stderr, mininterval=0.25)


def _summary_line(record, epochs):
    width = len(str(epochs))
    line = (f"epoch {record['epoch']:>{width}}/{epochs}  train loss {record['train_loss']:.4f} "
            f"acc {100 * record['train_accuracy']:.2f}%")
    if record.get("test_loss") is not None:
        line += (f"  test loss {record['test_loss']:.4f} "
                 f"acc {100 * record['test_accuracy']:.2f}%")
    return line + (f"  lr {record['lr']:.4g}  {record['time_s']:.1f} s  "
                   f"{record['images_per_s']:.0f} img/s")


def fit(model, optimizer, train_loader, test_loader=None, epochs=1, *, schedule=None,
        label_smoothing=0.0, device=None, checkpoint=None, metadata=None, resume=None,
        progress=True, log=print, on_batch_end=None, distributed=None):
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
                       progress and writes files.

    Raises ``TrainingInterrupted`` after Ctrl-C or SIGTERM, and ``TrainingDiverged`` (a
    ``FloatingPointError``) when the loss, the test loss or a weight stops being finite
    (a learning rate too high, usually); the checkpoint then stays the last good one.
    """
    device = device or _model_device(model)
    aux_weight = getattr(model, "aux_loss_weight", 0.3)
    start_epoch, start_batch, history = 0, 0, []
    running = {"loss_sum": 0.0, "correct": 0, "seen": 0, "time_s": 0.0}
    if resume is not None:
        state = load_training_checkpoint(resume) if isinstance(resume, (str, os.PathLike)) else resume
        saved = restore(state, model, optimizer, schedule)
        start_epoch, start_batch = int(saved["epoch"]), int(saved["batch"])
        history = list(saved["history"])
        running = dict(saved["running"])
    main = distributed is None or distributed.is_main_process
    if distributed is not None:
        distributed.prepare(generators=_generators(model).values())
        if not main:   # the checkpoint's running sums are all ranks' together: count once
            running.update(loss_sum=0.0, correct=0, seen=0)
            progress, log = False, (lambda line: None)

    if checkpoint is not None and main:        # what a run killed outright left behind
        from minicnn.files import remove_stale_temporaries
        remove_stale_temporaries(checkpoint, *history_paths(checkpoint))
    saved = {"where": _position(start_epoch, start_batch)} if resume is not None else {}

    def snapshot(epoch, batch):
        if checkpoint is None or not main:
            return
        progress_state = {"epoch": epoch, "batch": batch, "history": history,
                          "running": dict(running)}
        save_training_checkpoint(checkpoint, model, optimizer, schedule, progress_state,
                                 metadata)
        write_history(checkpoint, history)
        saved["where"] = _position(epoch, batch)

    def average_gradients():      # mean gradient over the ranks; any rank's Ctrl-C stops all
        ctrl_c.requested = distributed.after_backward(ctrl_c.requested)
    if distributed is None:
        average_gradients = None

    def diverged(what, where, images=None):
        return TrainingDiverged(_divergence(what, where, images, optimizer, checkpoint,
                                            saved.get("where")))

    model.train()
    steps = len(train_loader)
    with StopRequests(lambda message: print(message, file=sys.stderr, flush=True)) as ctrl_c:
        for epoch in range(start_epoch, epochs):
            first = start_batch if epoch == start_epoch else 0
            if first == 0:
                running = {"loss_sum": 0.0, "correct": 0, "seen": 0, "time_s": 0.0}
            bar = _progress_bar(steps, first, f"epoch {epoch + 1}/{epochs}", progress)
            began = time.perf_counter()
            elapsed_before = running["time_s"]
            batch = first
            try:
                for images, labels in train_loader.batches(epoch, start=first):
                    x = Tensor(to_device(images, device))
                    y = to_device(labels, device)
                    try:
                        value, correct = train_step(model, optimizer, x, y, label_smoothing,
                                                    aux_weight, schedule, average_gradients)
                    except NonFiniteLoss as bad:
                        raise diverged(f"the loss became {bad.value}",
                                       f"epoch {epoch + 1}, batch {batch + 1}", x.data) from None
                    running["loss_sum"] += value * len(labels)
                    running["correct"] += correct
                    running["seen"] += len(labels)
                    batch += 1
                    running["time_s"] = elapsed_before + time.perf_counter() - began
                    if bar is not None:
                        bar.set_postfix_str(
                            f"loss {running['loss_sum'] / running['seen']:.4f} "
                            f"acc {100 * running['correct'] / running['seen']:.2f}% "
                            f"{running['seen'] / max(running['time_s'], 1e-9):.0f} img/s",
                            refresh=False)
                        bar.update(1)
                    if on_batch_end is not None:
                        on_batch_end(epoch, batch, value)
                    if ctrl_c.requested:
                        break
            finally:
                if bar is not None:
                    bar.refresh()   # the epoch's final running figures, however fast it was
                    bar.close()
            if distributed is not None:   # sums over all ranks; equal batch-norm statistics
                running.update(distributed.reduce_sums(
                    {k: running[k] for k in ("loss_sum", "correct", "seen")}))
                distributed.synchronize_buffers()
            broken = _first_non_finite_weight(model)
            if broken is not None:     # checked before every save: never save NaN weights
                raise diverged(f"the weight {broken} is no longer finite",
                               f"epoch {epoch + 1}, batch {batch}")
            if ctrl_c.requested and batch < steps:
                snapshot(epoch, batch)
                raise TrainingInterrupted(checkpoint, epoch, batch, ctrl_c.signum)

            record = {"epoch": epoch + 1,
                      "train_loss": running["loss_sum"] / max(running["seen"], 1),
                      "train_accuracy": running["correct"] / max(running["seen"], 1),
                      "test_loss": None, "test_accuracy": None, "test_top5": None,
                      "lr": float(optimizer.param_groups[0]["lr"]),
                      "time_s": running["time_s"],
                      "images_per_s": running["seen"] / max(running["time_s"], 1e-9)}
            if test_loader is not None:
                result = evaluate(model, test_loader, device)
                if distributed is not None:
                    result = distributed.reduce_means(result, test_loader.num_samples)
                record.update(test_loss=result["loss"], test_accuracy=result["accuracy"],
                              test_top5=result["top5"])
                if not math.isfinite(result["loss"]):
                    raise diverged(f"the test loss became {result['loss']}",
                                   f"the end of epoch {epoch + 1}")
            history.append(record)
            log(_summary_line(record, epochs))
            running = {"loss_sum": 0.0, "correct": 0, "seen": 0, "time_s": 0.0}
            snapshot(epoch + 1, 0)
            if ctrl_c.requested:   # Ctrl-C during the last batch or the evaluation
                raise TrainingInterrupted(checkpoint, epoch + 1, 0, ctrl_c.signum)
    return history
