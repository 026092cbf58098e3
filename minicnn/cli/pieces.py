"""The pieces the commands are made of: datasets and their preprocessing, the network
(built, probed, started from weights, frozen), checkpoints read back, and the papers'
techniques turned into pipeline steps and training callbacks. Each imports what it needs
when called, so that a refused command line never loads the engine's heavy parts."""
import os

from minicnn.cli.settings import CliError, counted, freeze_last_count

def load_datasets(name, data_dir, image_size=32, channels=3, seed=0):
    from minicnn.data import load_dataset
    return load_dataset(name, data_dir=data_dir, image_size=image_size, channels=channels,
                        seed=seed)


def build_model(architecture, num_classes, in_channels, seed, **options):
    import architectures
    from minicnn.nn import init
    import numpy as np
    init.manual_seed(seed)      # the same seed builds the same initial weights
    np.random.seed(seed)
    try:
        return architectures.create(architecture, num_classes=num_classes,
                                    in_channels=in_channels, **options)
    except (TypeError, ValueError) as error:
        raise CliError(f"cannot build {architecture} for {in_channels}-channel input and "
                       f"{num_classes} classes: {error}") from None


def probe_input(model, architecture, in_channels, input_size, device):
    """One forward pass on a blank image: does the network take this input size?"""
    import numpy as np
    from minicnn.backend import to_device
    from minicnn.tensor import Tensor, no_grad
    blank = np.zeros((1, in_channels, input_size, input_size), dtype=np.float32)
    model.eval()
    try:
        with no_grad():
            model(Tensor(to_device(blank, device)))
    except (ValueError, TypeError, IndexError) as error:
        raise CliError(f"{architecture} cannot take {input_size}x{input_size} input: "
                       f"{str(error).splitlines()[0]}") from None
    finally:
        model.train()


def published_input(architecture):
    import architectures
    return architectures.entry(architecture).input_size


def make_pipeline(meta, augment):
    from minicnn.data.transforms import pipeline
    return pipeline(meta["image_size"], meta["channels"], meta["input_size"],
                    meta["in_channels"], meta["mean"], meta["std"], augment)


def prefetch_depth(transform):
    """Batches to prepare ahead in a background thread: two when preparing one costs real
    work (augmentation, resizing); none for a plain gather and normalise, which takes
    less time than handing a batch between threads is worth on a 2-core machine."""
    from minicnn.data.transforms import Resize
    busy = transform.random or any(isinstance(t, Resize) for t in transform.transforms)
    return 2 if busy else 0


def load_weights(architecture, path):
    """--weights: ``architecture`` built as the network the file's weights were trained in
    (torchvision's options where they differ from ours), with them loaded."""
    from architectures import pretrained
    from minicnn.io import FormatError
    try:
        return pretrained.create_with_weights(architecture, path)
    except FormatError as error:
        raise CliError(str(error).splitlines()[0]) from None
    except (KeyError, ValueError, TypeError) as error:
        raise CliError(f"--weights {path}: {str(error).splitlines()[0]}") from None


def weights_build_options(architecture):
    """The build options torchvision's weights for ``architecture`` need ({} if none)."""
    from architectures import pretrained
    try:
        return dict(pretrained.source(architecture).options)
    except (KeyError, ValueError):
        return {}


# what the command line records about a run, and needs back to evaluate or continue it
CHECKPOINT_META = ("architecture", "dataset", "classes", "num_classes", "in_channels",
                   "channels", "image_size", "input_size", "mean", "std")


def read_checkpoint(path, family, variants):
    """Load a training checkpoint and check it belongs to this family."""
    from minicnn.train import load_training_checkpoint
    if not os.path.isfile(path):
        raise CliError(f"checkpoint {path} does not exist")
    try:
        state = load_training_checkpoint(path)
    except ValueError as error:
        raise CliError(str(error).splitlines()[0]) from None
    meta = state.get("meta") or {}
    if meta.get("architecture") not in variants:
        raise CliError(f"checkpoint {path} holds a {meta.get('architecture')!r} network "
                       f"(family {meta.get('family')!r}), not one of {family}'s "
                       f"({', '.join(variants)})")
    missing = [key for key in CHECKPOINT_META if key not in meta]
    if missing or not isinstance(state.get("model"), dict) or "progress" not in state:
        lacking = ", ".join(missing) or "its weights or progress"
        raise CliError(f"checkpoint {path} lacks {lacking}: it was not written by this "
                       "command line (or was edited)")
    return state


def restore_weights(state, model, path):
    """The checkpoint's weights into ``model``, or one line saying why they do not fit."""
    from minicnn.train import restore
    try:
        restore(state, model)
    except (ValueError, KeyError, TypeError) as error:
        raise CliError(f"checkpoint {path} does not fit its own network "
                       f"({str(error).splitlines()[0]}): it is damaged or was edited") from None


def start_from(model, architecture, checkpoint, freeze, origin=None):
    """--finetune (a checkpoint path) or --weights (a state dict): the arrays that fit,
    then --freeze; none fitting is an error (a checkpoint of another network would
    silently train from scratch)."""
    import zipfile
    from minicnn.nn import load_partial
    origin = origin or f"--finetune {checkpoint}"
    try:
        report = load_partial(model, checkpoint)
        if not report.loaded:
            raise CliError(f"{origin}: none of its arrays fits {architecture} "
                           f"(another network's checkpoint?); {len(report.skipped)} skipped")
        print(report)
        frozen = apply_freeze_spec(model, freeze or "none")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise CliError(f"{origin}: {str(error).splitlines()[0]}") from None
    print(f"frozen ({freeze or 'none'}): {counted(len(frozen), 'parameter', 'parameters')}")


def write_plots(directory, model, history, test_set, test_loader, test_transform):
    from minicnn import plots
    labels, scores = plots.scores_for(model, test_loader)
    paths = plots.write_all(directory, history=history, model=model, images=test_set.images,
                            labels=labels, scores=scores, class_names=list(test_set.classes),
                            preprocess=lambda batch: test_transform(batch, None))
    print("plots: " + ", ".join(paths))



def apply_freeze_spec(model, spec):
    """--freeze ``spec`` (``settings.freeze_spec``) with ``minicnn.nn``'s freezing; returns
    the frozen parameters' names."""
    from minicnn.nn import freeze_all_but_last, freeze_backbone, unfreeze
    if spec == "none":
        unfreeze(model)
        return []
    if spec == "backbone":
        return freeze_backbone(model)
    try:
        return freeze_all_but_last(model, freeze_last_count(spec))
    except ValueError as error:
        raise ValueError(f"--freeze {spec}: {error}") from None


# ------------------------------------------------------------------------- the papers' techniques

class PCAColour:
    """AlexNet's colour augmentation as a pipeline step on normalised images
    (``data.augment.pca_colour_noise``; the offsets divided by the normalisation's std)."""
    random = True

    def __init__(self, eigenvalues, eigenvectors, std):
        self.eigenvalues, self.eigenvectors = eigenvalues, eigenvectors
        self.pixel_scale = [1.0 / s for s in std]

    def __call__(self, images, rng=None):
        from minicnn.data.augment import pca_colour_noise
        return pca_colour_noise(images, self.eigenvalues, self.eigenvectors, rng,
                                pixel_scale=self.pixel_scale)


class ScaleJitter:
    """VGG's scale jittering as a pipeline step (``data.augment.scale_jitter``): the
    normalised image rescaled to a shorter side S ~ U[MIN, MAX], cropped at random."""
    random = True

    def __init__(self, crop_size, sides):
        self.crop_size, self.sides = crop_size, tuple(int(s) for s in sides)

    def __call__(self, images, rng=None):
        from minicnn.data.augment import scale_jitter
        return scale_jitter(images, self.crop_size, self.sides, rng)


def training_pipeline(meta, settings, train_set):
    """``make_pipeline`` with the papers' augmentations where they belong: RandAugment on
    the uint8 pixels, before normalising; PCA colour noise after it; scale jittering in
    place of the resize to the input size."""
    from minicnn.data.augment import RandAugment, rgb_principal_components
    from minicnn.data.transforms import Compose, Normalize, PadTo, Resize
    steps = list(make_pipeline(meta, settings["augment"]).transforms)
    normalise = next(i for i, step in enumerate(steps) if isinstance(step, Normalize))
    randaugment = settings["randaugment"]
    if settings["progressive"] and not randaugment:   # its stages set the magnitude
        randaugment = (PROGRESSIVE_RANDAUGMENT_OPERATIONS, 0)
    if randaugment:
        operations, magnitude = randaugment
        steps.insert(normalise, RandAugment(int(operations), magnitude))
        normalise += 1
    after = []
    if settings["pca_colour"]:
        if train_set.channels != 3:
            raise CliError(f"--pca-colour needs colour images; {dataset_label(meta)} has "
                           f"{train_set.channels} channel(s)")
        eigenvalues, eigenvectors = rgb_principal_components(train_set.images)
        after.append(PCAColour(eigenvalues, eigenvectors, meta["std"]))
    if settings["scale_jitter"]:
        steps = [s for s in steps if not isinstance(s, (PadTo, Resize))]
        normalise = next(i for i, step in enumerate(steps) if isinstance(step, Normalize))
        after.append(ScaleJitter(meta["input_size"], settings["scale_jitter"]))
    return Compose(steps[:normalise + 1] + after + steps[normalise + 1:])


def dataset_label(meta):
    return os.path.basename(str(meta["dataset"]).rstrip(os.sep))


def check_scale_jitter(settings, input_size):
    """--scale-jitter MIN,MAX rescales and then crops the input size: MIN may not be below it."""
    if settings["scale_jitter"] and settings["scale_jitter"][0] < input_size:
        raise CliError(f"--scale-jitter {settings['scale_jitter'][0]},"
                       f"{settings['scale_jitter'][1]}: the smallest side must be at least the "
                       f"input size {input_size} (the crop is taken from the rescaled image)")


def set_batchnorm_momentum(model, momentum):
    """--bn-momentum: every batch-norm layer's momentum; one line saying how many."""
    from minicnn.nn.norm import BatchNormNd
    layers = [m for m in model.modules() if isinstance(m, BatchNormNd)]
    if not layers:
        raise CliError(f"--bn-momentum {momentum}: {type(model).__name__} has no batch norm")
    for layer in layers:
        layer.momentum = momentum
    print(f"batch-norm momentum {momentum:g} in {counted(len(layers), 'layer', 'layers')}")


def training_callbacks(settings, num_classes):
    """The ``fit`` callbacks of the papers' techniques the settings ask for."""
    from minicnn.callbacks import ExponentialMovingAverage, GradientClipping, Mixup
    callbacks = []
    if settings["clip_grad"]:
        callbacks.append(GradientClipping(settings["clip_grad"]))
    if settings["mixup"]:
        callbacks.append(Mixup(settings["mixup"], num_classes, seed=settings["seed"]))
    if settings["ema"]:
        callbacks.append(ExponentialMovingAverage(settings["ema"]))
    return callbacks


PROGRESSIVE_FAMILIES = ("efficientnet_v2",)
# RandAugment's number of operations under --progressive without --randaugment: the
# paper's stages give the magnitude only, and 2 is RandAugment's own default
PROGRESSIVE_RANDAUGMENT_OPERATIONS = 2


def progressive_schedule(settings, architecture, input_size):
    """--progressive STAGES as a ``minicnn.progressive.ProgressiveSchedule``: the paper's
    Table 6 ranges for the variant (S's where the variant has none), with the image sizes
    scaled to this run's input size (the paper ends training at 300 for S) unless
    --progressive-size gives them; one line when the stages cannot be made."""
    from minicnn import progressive
    table = progressive.EFFICIENTNET_V2_TABLE6
    paper = dict(table.get(architecture, table["efficientnet_v2_s"]))
    low, high = paper.pop("image_size")
    sizes = settings["progressive_size"] or (max(1, round(low * input_size / high)), input_size)
    try:
        return progressive.ProgressiveSchedule(settings["epochs"], settings["progressive"],
                                               image_size=tuple(sizes), **paper)
    except ValueError as error:
        raise CliError(f"--progressive {settings['progressive']}: {error}") from None


def progressive_callbacks(run):
    """The callback that moves image size and regularisation through the stages."""
    if not run.settings["progressive"]:
        return []
    from minicnn import progressive
    schedule = progressive_schedule(run.settings, run.architecture, run.input_size)
    if not hasattr(progressive, "ProgressiveLearning"):
        raise CliError("--progressive: this minicnn has the stage schedule but not the "
                       "training callback (minicnn.progressive.ProgressiveLearning)")
    learning = progressive.ProgressiveLearning(schedule, seed=run.settings["seed"])
    try:     # what the callback would refuse at the start of fit, as the user's error now
        learning.prepare(run.model, run.train_loader, run.settings["epochs"])
    except ValueError as error:
        raise CliError(f"--progressive {run.settings['progressive']}: "
                       f"{str(error).splitlines()[0]}") from None
    return [learning]
