"""AlexNet: Krizhevsky, Sutskever & Hinton (2012), "ImageNet Classification with Deep
Convolutional Neural Networks", NIPS 2012. Section 3 and Figure 2 are followed.

The network (227×227 input; the paper's text says 224, but 227 is what makes the
arithmetic of an 11×11/4 convolution give the 55×55 maps of Figure 2)::

    conv1  96 @ 11×11 / 4          ReLU  LRN  max-pool 3×3/2     55 → 27
    conv2 256 @ 5×5, pad 2         ReLU  LRN  max-pool 3×3/2     27 → 13
    conv3 384 @ 3×3, pad 1         ReLU                           13
    conv4 384 @ 3×3, pad 1         ReLU                           13
    conv5 256 @ 3×3, pad 1         ReLU       max-pool 3×3/2     13 → 6
    fc6 4096  ReLU  dropout 0.5
    fc7 4096  ReLU  dropout 0.5
    fc8 1000

Two towers
----------
The network was trained on two GTX 580 GPUs of 3 GB each, half of every layer's kernels
on each. Figure 2 draws the two towers: a tower's conv2, conv4 and conv5 read only the maps
of its own GPU; conv3 and the fully connected layers read the maps of both. A convolution
that reads only its own half of the input channels is a *grouped* convolution with
``groups=2``, which is how ``alexnet`` is built here (60,965,224 parameters).
``alexnet_single_tower`` lets every convolution read every map (62,378,344).

Local response normalization (Section 3.3) sums a² over n = 5 adjacent maps *of the same
layer on the same GPU*, so in ``alexnet`` the sum never crosses from one tower's maps to
the other's (``TowerLocalResponseNorm``). The paper's constants are k = 2, n = 5,
α = 1e-4, β = 0.75 with α not divided by n (Caffe and PyTorch divide it by n).

Model parallelism (the lesson of the two towers)
------------------------------------------------
``AlexNetTower(model, tower)`` is one GPU's half of a two-tower ``alexnet``: every layer
keeps its rows (output channels or units) ``[t·C/2, (t+1)·C/2)``. It runs as a list of
``stages``; between two stages the towers exchange activations, exactly where Figure 2
draws lines between the GPUs (before conv3, fc6, fc7, fc8, and to gather the logits).
``TowersInOneProcess`` runs the towers one after the other, joining their outputs by
concatenation at each exchange; it computes the same function as the grouped model. Put
each tower on its own process and make the exchange an all-gather, and the towers run on
two machines.

Reference builds and departures
-------------------------------
* ``alexnet_owt`` is the single-GPU variant of Krizhevsky (2014), "One weird trick for
  parallelizing convolutional neural networks" (64-192-384-256-256 kernels, no LRN,
  224 input, dropout before fc6 and fc7), the build torchvision ships (61,100,840).
* All variants pool adaptively to the 6×6 map that fc6 expects (a no-op at the published
  size), as torchvision does, so smaller inputs work. The three overlapping 3×3/2 pools
  still set a hard minimum input of 67×67 for ``alexnet`` and 63×63 for ``alexnet_owt``.
* Initialization: the paper draws weights from N(0, 0.01) and sets some biases to 1.
  ``alexnet`` and ``alexnet_single_tower`` use He initialization for the convolutions
  (normal, fan_out, as torchvision does for its VGG), N(0, 0.01) for the fully connected
  layers and zero biases, which starts training without the paper's hand-tuned scale.
  ``alexnet_owt`` keeps PyTorch's default layer initialization, like torchvision.

Training: SGD with momentum 0.9, weight decay 5e-4, batch 128, learning rate 0.01 divided
by 10 when the validation error stops improving.
"""
import copy
from collections import OrderedDict

import numpy as np

from architectures import register
from minicnn import functional as F
from minicnn import nn
from minicnn.distributed import comm as distributed_comm, model_parallel

TOWERS = 2

# Figure 2, one row per convolution. ``groups`` says how many towers the layer's kernels
# are split into *reading their own tower's maps only*: 2 for conv2, conv4, conv5. conv1
# reads the image and conv3 reads both towers' conv2 maps, so they are not grouped.
#         name    kernels  size stride pad  groups  followed by
FEATURES = [
    ("conv1",      96,      11,   4,    0,    1,    ("lrn", "pool")),
    ("conv2",     256,       5,   1,    2,    2,    ("lrn", "pool")),
    ("conv3",     384,       3,   1,    1,    1,    ()),
    ("conv4",     384,       3,   1,    1,    2,    ()),
    ("conv5",     256,       3,   1,    1,    2,    ("pool",)),
]
FC_WIDTHS = (4096, 4096)        # fc6, fc7; fc8 has one unit per class
POOLED_SIZE = 6                 # conv5's maps after the last pool at 227×227
LRN = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)  # Section 3.3, α not divided by n

# "One weird trick" (Krizhevsky 2014), the torchvision build: no groups, no LRN.
#            name    kernels size stride pad  followed by
OWT_FEATURES = [
    ("conv1",    64,   11,   4,    2,   ("pool",)),
    ("conv2",   192,    5,   1,    2,   ("pool",)),
    ("conv3",   384,    3,   1,    1,   ()),
    ("conv4",   256,    3,   1,    1,   ()),
    ("conv5",   256,    3,   1,    1,   ("pool",)),
]


class TowerLocalResponseNorm(nn.LocalResponseNorm):
    """Local response normalization inside each tower (Section 3.3):

        b[i] = a[i] / (k + α · Σ_{j = i−n/2}^{i+n/2} a[j]²)^β

    where j runs over the maps of the same tower only. Viewing (N, C, H, W) as
    (N·towers, C/towers, H, W) puts each tower's maps in a sample of their own, so the
    plain cross-channel sum cannot reach the other tower's maps.
    """

    def __init__(self, towers, size=5, alpha=1e-4, beta=0.75, k=2.0, alpha_over_n=False):
        super().__init__(size, alpha, beta, k, alpha_over_n)
        self.towers = towers

    def forward(self, x):
        if self.towers == 1:
            return super().forward(x)
        n, c, h, w = x.shape
        if c % self.towers:
            raise ValueError(f"TowerLocalResponseNorm: {c} channels do not split into "
                             f"{self.towers} towers")
        per_tower = super().forward(F.reshape(x, (n * self.towers, c // self.towers, h, w)))
        return F.reshape(per_tower, (n, c, h, w))

    def extra_repr(self):
        return f"towers={self.towers}, " + super().extra_repr()


def check_input(model_name, x, in_channels, min_size):
    """The check every model of this family makes where an image enters."""
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"{model_name}: expected input (N, {in_channels}, H, W), "
                         f"got shape {x.shape}")
    if min(x.shape[2:]) < min_size:
        raise ValueError(f"{model_name}: input must be at least {min_size}×{min_size} "
                         f"(its strided pools need it), got {x.shape[2]}×{x.shape[3]}")


def he_initialize(model):
    """He normal (fan_out) convolutions, N(0, 0.01) linear layers, zero biases."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
            nn.init.zeros_(module.bias)


class AlexNet(nn.Module):
    """AlexNet as Figure 2, in one process: ``towers=2`` builds the two-tower split as
    grouped convolutions, ``towers=1`` lets every kernel see every map.

    ``features`` → ``avgpool`` (adaptive, to 6×6) → ``flatten`` → ``classifier``.
    ``fc_widths`` are fc6 and fc7's 4096 units unless asked otherwise (a narrow head makes
    the model-parallel check quick).
    """
    min_input_size = 67

    def __init__(self, num_classes=1000, in_channels=3, towers=TOWERS, dropout=0.5,
                 fc_widths=FC_WIDTHS):
        super().__init__()
        if towers not in (1, 2):
            raise ValueError(f"AlexNet: towers must be 1 or 2, got {towers}")
        self.in_channels, self.towers = in_channels, towers
        layers, channels = OrderedDict(), in_channels
        for index, (name, kernels, size, stride, padding, groups, after) in enumerate(FEATURES, 1):
            layers[name] = nn.Conv2d(channels, kernels, size, stride, padding,
                                     groups=groups if towers > 1 else 1)
            layers[f"relu{index}"] = nn.ReLU()
            if "lrn" in after:
                layers[f"lrn{index}"] = TowerLocalResponseNorm(towers, **LRN)
            if "pool" in after:  # overlapping pooling, Section 3.4: z = 3 > s = 2
                layers[f"pool{index}"] = nn.MaxPool2d(3, 2)
            channels = kernels
        self.features = nn.Sequential(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(POOLED_SIZE)
        self.flatten = nn.Flatten()
        self.classifier = fully_connected(channels * POOLED_SIZE ** 2, num_classes, dropout,
                                          fc_widths)
        he_initialize(self)

    def layers(self):
        """Every layer in the order the data meets them (what ``AlexNetTower`` splits)."""
        return [*self.features, self.avgpool, self.flatten, *self.classifier]

    def forward(self, x):
        check_input("AlexNet", x, self.in_channels, self.min_input_size)
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


def fully_connected(in_features, num_classes, dropout, fc_widths=FC_WIDTHS):
    """fc6 → ReLU → dropout → fc7 → ReLU → dropout → fc8 (Section 4.2: dropout on the
    outputs of the two hidden fully connected layers)."""
    layers, width = OrderedDict(), in_features
    for index, units in enumerate(fc_widths, 6):
        layers[f"fc{index}"] = nn.Linear(width, units)
        layers[f"relu{index}"] = nn.ReLU()
        layers[f"drop{index}"] = nn.Dropout(dropout)
        width = units
    layers["fc8"] = nn.Linear(width, num_classes)
    return nn.Sequential(layers)


# ---------------------------------------------------------------- the towers, one by one

def tower_rows(length, tower, towers=TOWERS):
    """The rows (output channels or units) of a layer of ``length`` rows that ``tower``
    owns: an even share, the first towers taking one more when it does not divide."""
    bounds = np.cumsum([0] + [len(part) for part in np.array_split(np.arange(length), towers)])
    return slice(int(bounds[tower]), int(bounds[tower + 1]))


def _tower_part(layer, tower, towers):
    """A copy of ``layer`` holding only the rows ``tower`` owns.

    A Conv2d weight is (C_out, C_in/groups, kh, kw) and a Linear weight (out, in): in both,
    the tower's share is a block of rows. For a convolution grouped by tower, those rows
    already read only the tower's own C_in/groups maps; for an ungrouped one (conv1,
    conv3) they read every map, which the exchange before the layer has gathered.
    """
    if isinstance(layer, nn.Conv2d):
        if layer.groups not in (1, towers):
            raise ValueError(f"AlexNetTower: a convolution with groups={layer.groups} does not "
                             f"split into {towers} towers")
        rows = tower_rows(layer.out_channels, tower, towers)
        part = nn.Conv2d(layer.in_channels // layer.groups, rows.stop - rows.start,
                         layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                         bias=layer.bias is not None, dtype=layer.weight.dtype)
    elif isinstance(layer, nn.Linear):
        rows = tower_rows(layer.out_features, tower, towers)
        part = nn.Linear(layer.in_features, rows.stop - rows.start, bias=layer.bias is not None,
                         dtype=layer.weight.dtype)
    elif isinstance(layer, TowerLocalResponseNorm):
        return nn.LocalResponseNorm(layer.size, layer.alpha, layer.beta, layer.k,
                                    layer.alpha_over_n)
    else:  # ReLU, pools, dropout, flatten: nothing to split
        return copy.deepcopy(layer)
    part.weight.data[...] = layer.weight.data[rows]
    if layer.bias is not None:
        part.bias.data[...] = layer.bias.data[rows]
    return part


def _reads_every_tower(layer, first):
    """Does this layer need the other towers' activations? (Figure 2's crossing lines.)"""
    return isinstance(layer, nn.Linear) or (
        isinstance(layer, nn.Conv2d) and layer.groups == 1 and not first)


class AlexNetTower(nn.Module):
    """Tower ``tower`` of a two-tower ``AlexNet``, as ``stages`` run between exchanges.

    Stage 1 conv1 … pool2 | exchange | stage 2 conv3 … pool5, flatten | exchange |
    stage 3 fc6 | exchange | stage 4 fc7 | exchange | stage 5 fc8 | exchange (logits).

    Each exchange joins every tower's stage output along axis 1, in tower order. For the
    flattened pool5 maps that is the same order as flattening the joined maps, because
    each tower's channels are a contiguous block of the full layer's channels.
    """

    def __init__(self, model, tower):
        super().__init__()
        if not isinstance(model, AlexNet) or model.towers < 2:
            raise ValueError("AlexNetTower: needs a two-tower AlexNet (architectures.alexnet)")
        if not 0 <= tower < model.towers:
            raise ValueError(f"AlexNetTower: tower must be in [0, {model.towers}), got {tower}")
        self.tower, self.towers = tower, model.towers
        stages, current = [], []
        for index, layer in enumerate(model.layers()):
            if current and _reads_every_tower(layer, first=index == 0):
                stages.append(nn.Sequential(*current))
                current = []
            current.append(_tower_part(layer, tower, model.towers))
        stages.append(nn.Sequential(*current))
        self.stages = nn.ModuleList(stages)

    def forward(self, x):
        raise TypeError("AlexNetTower cannot run alone: its stages need the other towers' "
                        "activations between them; use TowersInOneProcess or run `stages` "
                        "with an exchange between them")


class TowersInOneProcess(nn.Module):
    """All towers of ``model`` in this process: run each stage in every tower, then let
    every tower continue from the concatenation of their outputs (the exchange). Same
    function as ``model`` itself; the lesson is where the towers have to talk.
    """

    def __init__(self, model):
        super().__init__()
        self.towers = nn.ModuleList([AlexNetTower(model, t) for t in range(model.towers)])
        self.in_channels, self.min_input_size = model.in_channels, model.min_input_size

    def exchange(self, outputs):
        """What every tower receives at a crossing: all towers' outputs, joined."""
        return F.concat(outputs, axis=1)

    def forward(self, x):
        check_input("TowersInOneProcess", x, self.in_channels, self.min_input_size)
        for stage in range(len(self.towers[0].stages)):
            x = self.exchange([tower.stages[stage](x) for tower in self.towers])
        return x


# -------------------------------------------------------------------- towers on MPI ranks

class ModelParallelAlexNet(nn.Module):
    """This rank's tower of a two-tower ``AlexNet``, exchanging with the other rank(s)
    (Krizhevsky et al. 2012, §3.2; the exchange: ``minicnn.distributed.model_parallel``).

    ``model`` is the single-process grouped network (``alexnet``);
    every rank passes the same weights (build with the same seed, or
    ``broadcast_state`` from rank 0) and keeps only its tower, rank r = tower r. The
    output is the full logits on every rank, equal to ``model(x)``.
    """

    def __init__(self, model, communicator=None):
        super().__init__()
        communicator = communicator or distributed_comm.world()
        if not isinstance(model, AlexNet) or model.towers < 2:
            raise ValueError("ModelParallelAlexNet: needs a two-tower AlexNet "
                             "(architectures.alexnet.alexnet)")
        if communicator.size != model.towers:
            raise ValueError(f"ModelParallelAlexNet: the model has {model.towers} towers, one "
                             f"per rank, but the job has {communicator.size} ranks (run with "
                             f"mpirun -np {model.towers})")
        self.communicator = communicator
        self.in_channels, self.min_input_size = model.in_channels, model.min_input_size
        self.tower = AlexNetTower(model, communicator.rank)

    def forward(self, x):
        check_input("ModelParallelAlexNet", x, self.in_channels, self.min_input_size)
        if x.requires_grad:                  # only then is the image's gradient wanted
            x = model_parallel.Replicate(self.communicator)(x)
        stages = self.tower.stages
        for index, stage in enumerate(stages):
            last = index == len(stages) - 1
            x = model_parallel.exchange(stage(x), self.communicator, replicated=last)
        return x


def tower_parameter_pairs(model, tower_module, tower):
    """[(name, tower parameter, ``model``'s parameter, rows)] for every weight and bias.

    ``rows`` (a slice) is the block of the full parameter the tower's was cut from —
    rows ``tower_rows(out, tower)`` of every convolution's and linear layer's weight and
    bias, what ``AlexNetTower`` copied — so ``full.data[rows]`` and ``full.grad[rows]``
    are what the tower's parameter and gradient must equal.
    """
    tower_layers = [layer for stage in tower_module.stages for layer in stage]
    full_layers = model.layers()
    if len(tower_layers) != len(full_layers):
        raise ValueError(f"tower_parameter_pairs: the tower has {len(tower_layers)} layers, "
                         f"the model {len(full_layers)}")
    pairs = []
    for index, (part, whole) in enumerate(zip(tower_layers, full_layers)):
        if not isinstance(whole, (nn.Conv2d, nn.Linear)):
            continue
        out = whole.weight.shape[0]
        rows = tower_rows(out, tower, model.towers)
        for name in ("weight", "bias"):
            mine, full = getattr(part, name), getattr(whole, name)
            if mine is not None:
                pairs.append((f"layer{index}.{name}", mine, full, rows))
    return pairs


# -------------------------------------------------------------------- one weird trick

class AlexNetOWT(nn.Module):
    """The single-GPU AlexNet of "One weird trick" (Krizhevsky 2014), torchvision's build:

    features (table ``OWT_FEATURES``) → adaptive avg-pool 6×6 → dropout → fc6 4096 → ReLU
    → dropout → fc7 4096 → ReLU → fc8.
    """
    min_input_size = 63

    def __init__(self, num_classes=1000, in_channels=3, dropout=0.5):
        super().__init__()
        self.in_channels = in_channels
        layers, channels = OrderedDict(), in_channels
        for index, (name, kernels, size, stride, padding, after) in enumerate(OWT_FEATURES, 1):
            layers[name] = nn.Conv2d(channels, kernels, size, stride, padding)
            layers[f"relu{index}"] = nn.ReLU()
            if "pool" in after:
                layers[f"pool{index}"] = nn.MaxPool2d(3, 2)
            channels = kernels
        self.features = nn.Sequential(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(POOLED_SIZE)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(OrderedDict(
            drop6=nn.Dropout(dropout), fc6=nn.Linear(channels * POOLED_SIZE ** 2, 4096),
            relu6=nn.ReLU(),
            drop7=nn.Dropout(dropout), fc7=nn.Linear(4096, 4096), relu7=nn.ReLU(),
            fc8=nn.Linear(4096, num_classes)))
        # PyTorch's default layer initialization, as torchvision: nothing to redo.

    def forward(self, x):
        check_input("AlexNetOWT", x, self.in_channels, self.min_input_size)
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


@register("alexnet", input_size=227,
          description="AlexNet, the paper's two towers as groups=2 convolutions (60,965,224)")
def alexnet(num_classes=1000, in_channels=3, **options):
    """AlexNet with the two-tower split of Figure 2 as grouped convolutions."""
    return AlexNet(num_classes, in_channels, towers=2, **options)


@register("alexnet_single_tower", input_size=227,
          description="AlexNet with every convolution reading every map (62,378,344)")
def alexnet_single_tower(num_classes=1000, in_channels=3, **options):
    """AlexNet in one tower: no grouped convolutions."""
    return AlexNet(num_classes, in_channels, towers=1, **options)


@register("alexnet_owt", input_size=224,
          description="AlexNet 'one weird trick' 64-192-384-256-256, torchvision (61,100,840)")
def alexnet_owt(num_classes=1000, in_channels=3, **options):
    """The single-GPU AlexNet of "One weird trick" (torchvision's alexnet)."""
    return AlexNetOWT(num_classes, in_channels, **options)


# Quick runs: Adam at 1e-4 gets AlexNet going at once; SGD at the paper's 0.01 (and He
# initialization, no batch norm) sat at chance for the first 60 steps on MNIST. MNIST
# digits are resized to 67×67, the smallest input the three strided pools take.
CLI_DEFAULTS = {"variant": "alexnet", "optimizer": "adam", "lr": 1e-4, "batch_size": 64,
                "datasets": {"mnist": {"input_size": 67, "epochs": 1}}}

if __name__ == "__main__":
    from minicnn.cli import main
    main()
