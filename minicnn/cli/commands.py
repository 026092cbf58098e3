"""The commands: summary, predict, evaluate, export and train. Each is given checked
settings (``minicnn.cli.settings``) and does one thing; ``minicnn.cli.main.run`` chooses.
"""
import os
import signal
import sys
import time

from minicnn.cli import pieces
from minicnn.cli.settings import (TRAINING_SETTINGS, CliError, Interrupted, counted, dataset_tag,
                                  optimizer_options, say)


# ----------------------------------------------------------------------------- summary

def show_summary(architecture, model, in_channels, input_size, batch_size, measure=None):
    from minicnn.summary import summary
    result = summary(model, (in_channels, input_size, input_size), batch_size,
                     measure=measure is not None, measure_batch_size=measure)
    if result is not None:
        print(result)


def summary_of_published(architecture, args, settings):
    """--summary without --train: the network as published (or as --weights fit it)."""
    import architectures
    entry = architectures.entry(architecture)
    input_size = args.input_size or entry.input_size
    if args.weights:
        model = pieces.load_weights(architecture, args.weights)
    else:
        model = pieces.build_model(architecture, entry.num_classes, entry.in_channels,
                                   settings["seed"])
    model.to(settings["device"])        # --measure runs its step where training would
    pieces.probe_input(model, architecture, entry.in_channels, input_size, settings["device"])
    show_summary(architecture, model, entry.in_channels, input_size, settings["batch_size"],
                 args.measure)


# ----------------------------------------------------------------------------- predict

def trained_model(state, path, device="cpu"):
    """The network of a checkpoint written by ``train``, with its weights."""
    meta = state["meta"]
    model = pieces.build_model(meta["architecture"], meta["num_classes"], meta["in_channels"], 0)
    pieces.restore_weights(state, model, path)
    return model.to(device)


def predict(state, images, device, path, top=5):
    """Print the ``top`` most likely classes of each image file."""
    import numpy as np
    from minicnn import functional as F
    from minicnn.backend import to_device
    from minicnn.data.folder import load_image
    from minicnn.tensor import Tensor, no_grad
    meta = state["meta"]
    model = trained_model(state, path, device).eval()
    transform = pieces.make_pipeline(meta, "none")
    for image_path in images:
        try:
            picture = load_image(image_path, meta["channels"], meta["image_size"])
        except ValueError as error:
            raise CliError(str(error)) from None
        note = ""
        if meta["dataset"] == "mnist" and picture.mean() > 127:
            picture = 255 - picture   # MNIST digits are light on dark; photos are the reverse
            note = "  (inverted: MNIST digits are white on black)"
        with no_grad():
            logits = model(Tensor(to_device(transform(picture[None]), device)))
            if isinstance(logits, (tuple, list)):
                logits = logits[0]
            probabilities = to_device(F.softmax(logits, axis=1).data, "cpu")[0]
        print(f"{image_path}{note}")
        for k in np.argsort(-probabilities)[:top]:
            print(f"  {meta['classes'][k]:>12}  {100 * probabilities[k]:6.2f}%")


def predict_imagenet(architecture, weights, images, device, top=5):
    """--weights W --predict PHOTO: the top ImageNet classes of each photo, with the
    preprocessing the weights were trained with (resize, centre crop, mean/std)."""
    from minicnn.data.imagenet import predict_topk, read_rgb
    model = pieces.load_weights(architecture, weights).to(device)
    for path in images:
        try:
            image = read_rgb(path)
        except (OSError, ValueError) as error:
            raise CliError(f"{path}: {str(error).splitlines()[0]}") from None
        print(path)
        for name, probability in predict_topk(model, image, k=top, variant=architecture):
            print(f"  {name:>28}  {100 * probability:6.2f}%")


# ----------------------------------------------------------------------------- evaluate

TEN_CROP_ENLARGEMENT = 256 / 224     # AlexNet's crops of 224 from 256-pixel images
DENSE_SCALES_AT_224 = (256, 384, 512)  # VGG's Q for S ∈ [256, 512] and 224 crops (§3.2)


def dense_scales(input_size):
    """VGG's three test scales Q, scaled from its 224-pixel input to ``input_size``."""
    return tuple(round(q * input_size / 224) for q in DENSE_SCALES_AT_224)


def fully_convolutional(model, channels, input_size):
    """``model`` convolutionized for ``--tta dense``, or one line saying why it cannot be."""
    from minicnn.convolutionize import convolutionize
    try:
        return convolutionize(model, (channels, input_size, input_size))
    except ValueError as error:
        raise CliError(f"--tta dense needs a network whose classifier can become "
                       f"convolutions: {error}") from None


def test_loader(test_set, meta, batch_size, tta="none"):
    """The test set's loader; for ``10crop`` the images come enlarged by AlexNet's 256/224
    so that the ten crops are of the network's input size, for ``dense`` at the largest
    of VGG's scales, from which the others are resized."""
    from minicnn.data.loader import DataLoader
    if tta == "10crop":
        meta = dict(meta, input_size=round(meta["input_size"] * TEN_CROP_ENLARGEMENT))
    if tta == "dense":
        meta = dict(meta, input_size=max(dense_scales(meta["input_size"])))
    transform = pieces.make_pipeline(meta, "none")
    return DataLoader(test_set, batch_size, transform=transform,
                      prefetch=pieces.prefetch_depth(transform))


def evaluate_with_tta(model, loader, tta, input_size, device, channels):
    """Top-1 accuracy and mean loss of class probabilities averaged over the ``tta`` views
    (``minicnn.tta``): ``flip`` (image and mirror), ``10crop``, or ``dense`` (VGG's: the
    network convolutionized, run on the whole image at three scales and their mirrors)."""
    import numpy as np
    from minicnn import tta as views
    from minicnn.backend import to_device
    if tta == "dense":
        dense, scales = fully_convolutional(model, channels, input_size), dense_scales(input_size)

        def probabilities_of(images):
            return views.dense_predict(dense, images, scales, device=device)
    else:
        def probabilities_of(images):
            return views.predict(model, to_device(images, device), tta, crop_size=input_size)
    hits, loss_sum, seen = 0, 0.0, 0
    for images, labels in loader.batches(0):
        probabilities = to_device(probabilities_of(images), "cpu")
        hits += int((probabilities.argmax(axis=1) == labels).sum())
        picked = probabilities[np.arange(len(labels)), labels]
        loss_sum += float(-np.log(np.maximum(picked, 1e-12)).sum())
        seen += len(labels)
    return {"loss": loss_sum / seen, "accuracy": hits / seen}


def evaluate_only(state, test, settings, device, path):
    from minicnn.train import evaluate
    meta = state["meta"]
    model = trained_model(state, path, device)
    loader = test_loader(test, meta, 2 * settings["batch_size"], settings["tta"])
    name = f"{meta['architecture']} on {dataset_tag(meta['dataset'])}"
    if settings["tta"] != "none":
        result = evaluate_with_tta(model, loader, settings["tta"], meta["input_size"], device,
                                   meta["in_channels"])
        print(f"{name} with --tta {settings['tta']}: test loss {result['loss']:.4f}  "
              f"accuracy {100 * result['accuracy']:.2f}%  ({len(test):,} images)")
        return result
    result = evaluate(model, loader)
    print(f"{name}: test loss {result['loss']:.4f}  accuracy {100 * result['accuracy']:.2f}%  "
          f"top-5 {100 * result['top5']:.2f}%  ({len(test):,} images)")
    return result


def evaluate_imagenet_folder(architecture, weights, folder, settings):
    """--eval-only --weights W --train FOLDER: ImageNet top-1/top-5 on labelled photos."""
    from minicnn.data.imagenet import evaluate_folder
    if not os.path.isdir(folder):
        raise CliError(f"--eval-only --weights evaluates a folder of photos; {folder} is not "
                       "a folder")
    model = pieces.load_weights(architecture, weights).to(settings["device"])
    result = evaluate_folder(model, folder, variant=architecture,
                             batch_size=settings["batch_size"])
    print(f"{architecture} with {weights} on {folder}: top-1 {100 * result['top1']:.2f}%  "
          f"top-5 {100 * result['topk']:.2f}%  ({result['images']:,} images, "
          f"{result['classes']} classes)")
    return result


# ----------------------------------------------------------------------------- export

def export_onnx(model, path, input_shape):
    """--export-onnx: the network as an ONNX file, checked by the onnx package."""
    from minicnn.onnx import ExportError, export
    try:
        export(model, path, input_shape=input_shape)
    except ExportError as error:
        raise CliError(f"--export-onnx: {str(error).splitlines()[0]}") from None
    print(f"ONNX: {path} (input {'x'.join(str(n) for n in input_shape)}, batch dynamic)")


def export_trained(architecture, args, state):
    """--export-onnx from --weights or a --resume checkpoint, without training."""
    if args.weights:
        import architectures
        entry = architectures.entry(architecture)
        size = args.input_size or entry.input_size
        model = pieces.load_weights(architecture, args.weights)
        shape = (entry.in_channels, size, size)
    else:
        meta = state["meta"]
        model = trained_model(state, args.resume)
        shape = (meta["in_channels"], meta["input_size"], meta["input_size"])
    export_onnx(model, args.export_onnx, shape)


# ----------------------------------------------------------------------------- train

class Run:
    """What ``train`` prepares before the loop starts, in the order it is prepared."""

    def __init__(self, family, architecture, dataset, settings, args, state):
        self.family, self.architecture, self.dataset = family, architecture, dataset
        self.settings, self.args, self.state = settings, args, state
        self.input_size = settings["input_size"] or pieces.published_input(architecture)
        self.data_parallel = None


def train(family, architecture, dataset, settings, args, state, started, save, note=None):
    """A training run. ``note`` (why it saves under a new name) is said once everything
    that could still refuse the run (data, --finetune, --weights) has been read, so a
    refused run prints only its error."""
    run = Run(family, architecture, dataset, settings, args, state)
    compiling = start_compiling(run)
    load_data(run)
    if compiling is not None:   # joined before anything else runs a network (summaries
        compiling.join()        # trace through global hooks a second thread would feed)
    build_network(run)
    make_loaders(run)
    make_optimizer_and_schedule(run)
    print_header(run, save, note)
    history = run_fit(run, save)
    report(run, history, started, save)
    return history


# the channels of the built-in data sets, known before they load
DATASET_CHANNELS = {"mnist": 1, "cifar10": 3}


def start_compiling(run):
    """Compile the network's CPU kernels in a background thread while its data loads
    (``minicnn.warm.warm_up``): on an empty Numba cache the first step would otherwise
    wait for them. Returns the thread, or None where the input is not known in advance."""
    channels = DATASET_CHANNELS.get(run.dataset)
    if channels is None or run.settings["device"] != "cpu":
        return None
    import architectures
    from minicnn.warm import warm_up
    # (no helper processes under MPI, whose transports can break in a forked child)
    return warm_up(lambda: architectures.create(run.architecture, in_channels=channels),
                   (channels, int(run.input_size), int(run.input_size)),
                   helpers=0 if run.args.distributed else None)


def load_data(run):
    from minicnn.distributed import main_process_first
    if run.args.distributed and run.settings["device"] == "gpu":   # one GPU per rank
        from minicnn.distributed import nccl, world
        nccl.select_device(world())
    with main_process_first():   # under --distributed rank 0 fetches and caches the data first
        run.train_set, run.test_set = pieces.load_datasets(
            run.dataset, run.args.data_dir, image_size=run.input_size, seed=run.settings["seed"])
    mean, std = run.train_set.channel_statistics()   # of the full training set
    run.train_set = run.train_set.subset(run.settings["limit_train"], seed=run.settings["seed"])
    train_set = run.train_set
    run.meta = {"family": run.family, "architecture": run.architecture, "dataset": run.dataset,
                "classes": list(train_set.classes), "num_classes": train_set.num_classes,
                "in_channels": train_set.channels, "channels": train_set.channels,
                "image_size": int(train_set.image_size[0]), "input_size": int(run.input_size),
                "mean": list(mean), "std": list(std),
                "settings": {k: run.settings[k] for k in TRAINING_SETTINGS}}
    if run.state is not None:
        old = run.state["meta"]
        if old.get("dataset") != run.dataset:
            raise CliError(f"checkpoint {run.args.resume} was trained on "
                           f"{dataset_tag(old.get('dataset'))}, not {dataset_tag(run.dataset)}")
        run.meta.update({k: old[k] for k in ("mean", "std")})   # keep the run's normalisation


def build_network(run):
    args, settings, channels = run.args, run.settings, run.train_set.channels
    options = pieces.weights_build_options(run.architecture) if args.weights else {}
    model = pieces.build_model(run.architecture, run.train_set.num_classes, channels,
                               settings["seed"], **options)
    model.to(settings["device"])
    pieces.probe_input(model, run.architecture, channels, run.input_size, settings["device"])
    if settings["tta"] == "dense":      # refused now, not after training
        fully_convolutional(model, channels, run.input_size)
    if args.summary:
        show_summary(run.architecture, model, channels, run.input_size, settings["batch_size"],
                     args.measure)
    if args.finetune:
        pieces.start_from(model, run.architecture, args.finetune, args.freeze)
    elif args.weights:
        weights = pieces.load_weights(run.architecture, args.weights).state_dict()
        pieces.start_from(model, run.architecture, weights, args.freeze,
                          origin=f"--weights {args.weights}")
    if settings["bn_momentum"]:
        pieces.set_batchnorm_momentum(model, settings["bn_momentum"])
    run.model = model


def make_loaders(run):
    from minicnn.data.loader import DataLoader
    batch_size, train_set = run.settings["batch_size"], run.train_set
    train_transform = pieces.training_pipeline(run.meta, run.settings, train_set)
    run.train_loader = DataLoader(train_set, batch_size, shuffle=True,
                                  drop_last=len(train_set) > batch_size,
                                  transform=train_transform, seed=run.settings["seed"],
                                  prefetch=pieces.prefetch_depth(train_transform))
    run.test_loader = test_loader(run.test_set, run.meta, 2 * batch_size)
    if run.args.distributed:   # this rank's shards; the schedule counts this rank's steps
        from minicnn.distributed import DataParallel
        run.data_parallel = DataParallel(run.model, sync_batchnorm=run.args.sync_bn)
        run.train_loader = run.data_parallel.shard(run.train_loader)
        run.test_loader = run.data_parallel.shard(run.test_loader, remainder="uneven")


def make_optimizer_and_schedule(run):
    from minicnn.nn import trainable_parameters   # frozen parameters stay out
    from minicnn.train import make_optimizer, make_schedule
    settings = run.settings
    try:
        run.optimizer = make_optimizer(settings["optimizer"], trainable_parameters(run.model),
                                       settings["lr"], momentum=settings["momentum"],
                                       weight_decay=settings["weight_decay"],
                                       **optimizer_options(settings))
        run.schedule = make_schedule(settings["schedule"], run.optimizer, settings["epochs"],
                                     len(run.train_loader))
    except (TypeError, ValueError) as error:
        raise CliError(str(error)) from None


def print_header(run, save, note):
    settings, train_set, size = run.settings, run.train_set, run.input_size
    print(f"{run.architecture} on {dataset_tag(run.dataset)}: {len(train_set):,} training and "
          f"{len(run.test_set):,} test images, input {train_set.channels}x{size}x{size}, "
          f"{run.model.num_parameters():,} parameters")
    momentum = (f" momentum {settings['momentum']:g}"
                if settings["optimizer"] in ("sgd", "rmsprop") else "")
    print(f"{settings['optimizer']} lr {settings['lr']:g}{momentum} weight decay "
          f"{settings['weight_decay']:g}, schedule {settings['schedule']}, "
          f"{counted(settings['epochs'], 'epoch', 'epochs')} of "
          f"{counted(len(run.train_loader), 'batch', 'batches')} of {settings['batch_size']}, "
          f"augment {settings['augment']}, seed {settings['seed']}, {settings['device']}")
    techniques = technique_line(settings)
    if techniques:
        print(techniques)
    if run.data_parallel is not None:
        size = run.data_parallel.size
        print(f"data parallel: {size} ranks x {settings['batch_size']} images = "
              f"{size * settings['batch_size']} per step"
              + (", synchronized batch norm" if run.args.sync_bn else ""))
    if note:
        say(note)
    print(f"checkpoint: {save}" + (f" (resuming {run.args.resume})" if run.state else ""),
          flush=True)


def technique_line(settings):
    """The papers' techniques this run uses, in one line (empty when none)."""
    used = []
    if settings["randaugment"]:
        used.append("RandAugment {},{:g}".format(*settings["randaugment"]))
    if settings["pca_colour"]:
        used.append("PCA colour")
    if settings["scale_jitter"]:
        used.append("scale jitter {},{}".format(*settings["scale_jitter"]))
    for key, name in (("mixup", "mixup α"), ("clip_grad", "clip grad norm"),
                      ("ema", "EMA decay"), ("bn_momentum", "BN momentum"),
                      ("progressive", "progressive stages")):
        if settings[key]:
            used.append(f"{name} {settings[key]:g}")
    return ", ".join(used)


def run_fit(run, save):
    """``minicnn.train.fit`` with the run's callbacks; interruptions become one line."""
    import minicnn.train
    callbacks = pieces.training_callbacks(run.settings, run.train_set.num_classes)
    callbacks += pieces.progressive_callbacks(run)
    try:
        return minicnn.train.fit(
            run.model, run.optimizer, run.train_loader, run.test_loader,
            run.settings["epochs"], schedule=run.schedule,
            label_smoothing=run.settings["label_smoothing"], checkpoint=save,
            metadata=run.meta, resume=run.state, progress=sys.stderr.isatty(),
            log=lambda line: print(line, flush=True), distributed=run.data_parallel,
            callbacks=callbacks)
    except minicnn.train.TrainingInterrupted as interrupted:
        raise Interrupted(f"{interrupted}; continue with --resume {save}",
                          status=128 + (interrupted.signum or signal.SIGINT)) from None
    except KeyboardInterrupt:   # the second Ctrl-C: no saving, but the last save is whole
        raise Interrupted(f"stopped at once without saving; {save} holds the last complete "
                          "checkpoint" if os.path.exists(save) else
                          "stopped at once; nothing was saved") from None
    except (ValueError, KeyError) as error:   # a checkpoint that does not fit this model
        if run.state is None:
            raise
        raise CliError(f"cannot resume from {run.args.resume}: "
                       f"{str(error).splitlines()[0]}") from None


def report(run, history, started, save):
    """The closing lines, the final --tta evaluation, then --plot and --export-onnx."""
    if history and history[-1]["test_accuracy"] is not None:
        last = history[-1]
        print(f"done in {time.perf_counter() - started:.1f} s: test accuracy "
              f"{100 * last['test_accuracy']:.2f}% (top-5 {100 * last['test_top5']:.2f}%), "
              f"checkpoint {save}")
    if run.data_parallel is not None and not run.data_parallel.is_main_process:
        return
    if run.settings["tta"] != "none":
        loader = test_loader(run.test_set, run.meta, 2 * run.settings["batch_size"],
                             run.settings["tta"])
        result = evaluate_with_tta(run.model, loader, run.settings["tta"], run.input_size,
                                   run.settings["device"], run.train_set.channels)
        print(f"with --tta {run.settings['tta']}: test accuracy "
              f"{100 * result['accuracy']:.2f}%  loss {result['loss']:.4f}")
    if run.args.plot:
        pieces.write_plots(run.args.plot, run.model, history, run.test_set, run.test_loader,
                           pieces.make_pipeline(run.meta, "none"))
    if run.args.export_onnx:
        export_onnx(run.model.to("cpu"), run.args.export_onnx,
                    (run.train_set.channels, int(run.input_size), int(run.input_size)))
