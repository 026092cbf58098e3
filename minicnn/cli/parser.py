"""The parser of the shared command line: every option one ``add`` line, its help showing
the family's default. Only ``argparse`` and the settings tables are imported, so
``--help`` is instant."""
import argparse

from minicnn.cli.settings import (AUGMENTATIONS, DEBUG_ENV, FREEZE_HELP, LIST_RECIPE, RANGES,
                                  CliError, freeze_spec)
from minicnn.schedules import SCHEDULE_HELP

class _Parser(argparse.ArgumentParser):
    def error(self, message):   # argparse prints usage plus the error; one line is clearer
        raise CliError(f"{message} (see --help)")


def build_parser(family, defaults, variants):
    """The parser; every option is one ``add`` line (in the group functions below), its help
    showing the family default."""
    parser = _Parser(
        prog=f"python -m architectures.{family}",
        description=f"Train, evaluate, inspect or run a {family} network (minicnn).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               f"  python -m architectures.{family} --train mnist\n"
               f"  python -m architectures.{family} --summary\n"
               f"  python -m architectures.{family} --resume CHECKPOINT --predict IMAGE ...\n"
               "Data is kept in $MINICNN_DATA or ~/.cache/minicnn (see --data-dir).")

    def add(group, flag, help, **options):
        key = flag.lstrip("-").replace("-", "_")
        if key in defaults and defaults[key] is not None and "action" not in options:
            help += f" (default: {defaults[key]})"
        group.add_argument(flag, help=help, **options)

    task_options(parser, add)
    network_options(parser, add, variants)
    training_options(parser, add)
    paper_options(parser, add)
    place_options(parser, add)
    inside_options(parser, add)
    trouble_options(parser, add)
    return parser


def task_options(parser, add):
    """Options: what to do."""
    task = parser.add_argument_group("what to do")
    add(task, "--train", "train on DATASET: mnist, cifar10, or a folder with one sub-folder "
        "of images per class", metavar="DATASET")
    add(task, "--eval-only", "only evaluate the --resume checkpoint on the test set",
        action="store_true")
    add(task, "--summary", "print layers, output shapes, parameters and FLOPs",
        action="store_true")
    add(task, "--predict", "print the top-5 classes of each image, using the --resume "
        "checkpoint", nargs="+", metavar="IMAGE")


def network_options(parser, add, variants):
    """Options: the network."""
    model = parser.add_argument_group("network")
    add(model, "--variant", "which network of this family: " + ", ".join(variants),
        metavar="NAME")
    add(model, "--input-size", "input side in pixels (images are padded or resized to it); "
        "default: the size the variant was published for", type=RANGES["input_size"],
        metavar="PIXELS")


def training_options(parser, add):
    """Options: training."""
    recipe = parser.add_argument_group("training")
    add(recipe, "--epochs", "passes over the training set", type=RANGES["epochs"], metavar="N")
    add(recipe, "--batch-size", "images per step", type=RANGES["batch_size"], metavar="N")
    add(recipe, "--lr", "learning rate (at its peak, with a schedule), in (0, 10]",
        type=RANGES["lr"])
    add(recipe, "--optimizer", "update rule", choices=("sgd", "adam", "adamw", "rmsprop"))
    add(recipe, "--momentum", "momentum of sgd and rmsprop, in [0, 1)", type=RANGES["momentum"])
    add(recipe, "--weight-decay", "L2 penalty (decoupled for adamw), in [0, 1)",
        type=RANGES["weight_decay"])
    add(recipe, "--schedule", "learning-rate schedule: " + SCHEDULE_HELP, metavar="SPEC")
    add(recipe, "--label-smoothing", "label smoothing ε of the cross-entropy "
        "(Szegedy et al. 2016 use 0.1), in [0, 1)", type=RANGES["label_smoothing"],
        metavar="EPS")
    add(recipe, "--augment", "training augmentation (default: none for mnist, crop-flip for "
        "cifar10, flip for folders)", choices=AUGMENTATIONS)
    add(recipe, "--limit-train", "train on a random subset of N images (quick runs)",
        type=RANGES["limit_train"], metavar="N")
    add(recipe, "--seed", "seed of initialisation, shuffling and augmentation, 0 to 2**32-1",
        type=RANGES["seed"])


def paper_options(parser, add):
    """Options: the papers' techniques (issue 18)."""
    papers = parser.add_argument_group("training as the papers did")
    add(papers, "--recipe", "apply the paper's training recipe of this family (NAME: paper; "
        "explicit flags still win); --recipe alone lists what it sets", nargs="?",
        const=LIST_RECIPE, metavar="NAME")
    add(papers, "--randaugment", "RandAugment: N operations of magnitude M (0 to 30) per "
        "image, e.g. 2,9", type=RANGES["randaugment"], metavar="N,M")
    add(papers, "--mixup", "mixup: train on blends of image pairs, λ ~ Beta(α, α), α > 0",
        type=RANGES["mixup"], metavar="ALPHA")
    add(papers, "--clip-grad", "clip the gradients' global L2 norm to NORM (Inception-v3: 2)",
        type=RANGES["clip_grad"], metavar="NORM")
    add(papers, "--ema", "evaluate with an exponential moving average of the weights of this "
        "decay, in (0, 1) (EfficientNetV2: 0.9999)", type=RANGES["ema"], metavar="DECAY")
    add(papers, "--bn-momentum", "batch-norm momentum (weight of the new batch), in (0, 1] "
        "(EfficientNet: 0.01)", type=RANGES["bn_momentum"], metavar="M")
    add(papers, "--pca-colour", "AlexNet's colour augmentation along the principal components "
        "of the training set's RGB values (colour images)", action="store_true")
    add(papers, "--scale-jitter", "VGG's scale jittering: rescale each training image so its "
        "shorter side is S in [MIN, MAX], then crop the input size", type=RANGES["scale_jitter"],
        metavar="MIN,MAX")
    add(papers, "--progressive", "EfficientNetV2's progressive learning in STAGES stages: image "
        "size and regularisation rising together", type=RANGES["progressive"], metavar="STAGES")
    add(papers, "--progressive-size", "with --progressive: the first and last stages' image "
        "sizes (default: from the paper's 128 to 300, scaled to the input size)",
        type=RANGES["progressive_size"], metavar="MIN,MAX")
    add(papers, "--tta", "test-time augmentation of the evaluation: none, flip (and mirror), "
        "10crop (AlexNet's corners, centre and mirrors) or dense (VGG's: the network "
        "convolutionized, on the whole image at three scales and mirrored)",
        choices=("none", "flip", "10crop", "dense"))


def place_options(parser, add):
    """Options: devices and files."""
    where = parser.add_argument_group("where")
    add(where, "--device", "run on the CPU (NumPy/Numba) or a CUDA GPU (CuPy)",
        choices=("cpu", "gpu"))
    add(where, "--data-dir", "folder holding (and caching) datasets", metavar="DIR")
    add(where, "--save", "checkpoint written after every epoch (default: "
        "checkpoints/VARIANT-DATASET.npz, or -2, -3, ... when taken; metrics go beside it); "
        "a path ending in .safetensors writes the same checkpoint as safetensors",
        metavar="PATH")
    add(where, "--overwrite", "let --save (or the default name, or --plot's files) replace "
        "another run's files", action="store_true")
    add(where, "--resume", "continue training from (or evaluate, or predict with) this "
        "checkpoint", metavar="PATH")
    add(where, "--distributed", "data-parallel training over the ranks of an MPI job, e.g. "
        "mpirun -np 2 python -m architectures.lenet5 --train mnist --distributed; "
        "--batch-size is per rank; rank 0 prints and saves", action="store_true")
    add(where, "--sync-bn", "with --distributed: batch norm over all ranks' samples "
        "(SyncBatchNorm)", action="store_true")


def inside_options(parser, add):
    """Options: seeing inside and transfer."""
    see = parser.add_argument_group("seeing inside and transfer")
    add(see, "--measure", "with --summary: also run one real training step at batch N and "
        "show its measured peak memory next to the rule of thumb", type=RANGES["measure"],
        metavar="N")
    add(see, "--plot", "after training, write learning curves, first-layer filters, feature "
        "maps, the confusion matrix and the worst misclassified images as PNGs into DIR",
        metavar="DIR")
    add(see, "--finetune", "start from the weights of this checkpoint (a head of another "
        "size is skipped and reported)", metavar="CHECKPOINT")
    add(see, "--freeze", f"with --finetune or --weights: {FREEZE_HELP}", type=freeze_spec,
        metavar="MODE")
    add(see, "--weights", "pretrained weights for the variant: a torchvision .pth/.pt, or a "
        ".safetensors/.npz state dict (see README). With --predict: the top-5 ImageNet "
        "classes of each photo; with --eval-only --train FOLDER: top-1/top-5 on photos filed "
        "by ImageNet class; with --train: start from them (a head of another size is "
        "replaced); with --summary: the network they fit", metavar="PATH")
    add(see, "--export-onnx", "write the network as an ONNX file (after training, or from "
        "--resume or --weights); needs pip install 'minicnn[onnx]'", metavar="PATH")


def trouble_options(parser, add):
    """Options: trouble."""
    trouble = parser.add_argument_group("trouble")
    add(trouble, "--debug", f"show the full traceback of an internal error (or set "
        f"{DEBUG_ENV}=1)", action="store_true")
