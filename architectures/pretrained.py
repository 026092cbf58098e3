"""Pretrained torchvision weights for the zoo: torchvision's key names → ours.

torchvision publishes ImageNet weights for many of the networks this zoo builds. The
arrays are the same; only the names differ, because torchvision numbers the layers of its
``nn.Sequential`` containers (``features.3``) where our files name them after the paper
(``features.fire2``). Each family below says how its names translate, as one small
function from *our* module path to *torchvision's*:

    ours                                      torchvision
    stem.conv1                                conv1                      (ResNet)
    layer2.0.shortcut.0                       layer2.0.downsample.0
    features.fire2.squeeze                    features.3.squeeze         (SqueezeNet)
    features.stage2.0.block.se.reduce         features.2.0.block.2.fc1   (EfficientNet)

Walking our model, every module that holds arrays (a convolution, a batch norm with its
running statistics, a linear layer) gets its torchvision path, and each array keeps its own
name (``weight``, ``bias``, ``running_mean``, ``running_var``): that gives the whole
``{torchvision key: our key}`` table. torchvision's ``num_batches_tracked`` counters only
feed a momentum schedule nobody uses in eval mode, and are ignored.

Where our paper-faithful default differs from the network torchvision trained, the
weights go into the build that matches, chosen by ``TORCHVISION`` (``options``):

* ResNet-101/152: torchvision's are "v1.5", stride 2 on the bottleneck's 3×3
  (``stride_on_3x3=True``; for ResNet-50 that build is our ``resnet50_b``). Same
  parameters, different function: the paper's build would load silently and be wrong.
* EfficientNet-B0…B4: torchvision trained them with PyTorch's batch-norm ε = 10⁻⁵
  (``bn_eps=1e-5``); B5…B7 (ported from TensorFlow) and EfficientNetV2 use our 10⁻³.
* Inception-v3: torchvision's 3×3/1 average pools count the zero padding
  (``pool_counts_padding=True``); ours, as TensorFlow's, do not. The official weights also
  expect inputs normalised to [−1, 1] (torchvision's ``transform_input``):
  ``minicnn.data.imagenet.preprocess`` does that for Inception-v3.

``load_pretrained`` checks the build (these options), every key and every shape before it
changes the model, so a wrong file leaves the model untouched.
"""
import os
import zipfile
import re
from collections import namedtuple

import numpy as np

from minicnn import nn

# ----------------------------------------------------------------------------- helpers
IGNORED_SUFFIXES = ("num_batches_tracked",)


def _submodule(model, path):
    module = model
    for name in path.split("."):
        module = module._modules[name]
    return module


def _position(model, path):
    """Where the last module of ``path`` sits among its parent's children, counting from 0.

    torchvision's ``nn.Sequential`` containers are numbered; where ours hold the same
    layers in the same order (pools and activations included), a name's position *is*
    torchvision's number.
    """
    parent, _, name = path.rpartition(".")
    return list(_submodule(model, parent)._modules).index(name)


def _number(model, path, depth):
    """``path`` with its first ``depth`` components replaced by their positions from
    component 1 on: ``features.fire2.squeeze`` → ``features.3.squeeze`` at depth 2."""
    parts = path.split(".")
    for index in range(1, depth):
        parts[index] = str(_position(model, ".".join(parts[:index + 1])))
    return ".".join(parts)


# ----------------------------------------------------------------------------- the families
def sequential_names(model, path):
    """AlexNet (one weird trick), VGG, SqueezeNet: ``features`` and ``classifier`` hold
    the same layers as torchvision's, in the same order, named instead of numbered.

    features.conv1 → features.0,  classifier.fc6 → classifier.1,
    features.fire2.squeeze → features.3.squeeze (a fire module keeps its own names).
    """
    return _number(model, path, depth=2)


def resnet_names(model, path):
    """ResNet, Wide ResNet, ResNeXt: torchvision keeps the stem's layers at the top and
    calls the projection shortcut ``downsample``; the stages are ``layer1…4`` in both.

    stem.conv1 → conv1,  stem.bn1 → bn1,  layer1.0.shortcut.1 → layer1.0.downsample.1
    """
    path = re.sub(r"^stem\.", "", path)
    return re.sub(r"\.shortcut\.", ".downsample.", path)


def densenet_names(model, path):
    """DenseNet: our modules are named as torchvision's (features.denseblock1.denselayer1
    .norm1, features.transition1.conv, classifier), so the table is the identity."""
    return path


def mobilenet_v2_names(model, path):
    """MobileNetV2: ``features`` numbers stem, blocks and head in order (0 … 18); a block's
    ``conv`` is one flat Sequential of [expand (t > 1), depthwise, project conv, project BN],
    so our ``project`` pair (conv, BN) takes two numbers; ``classifier.1`` (after dropout).

    features.bottleneck2_1.block.depthwise.0 → features.2.conv.1.0
    features.bottleneck2_1.block.project.1   → features.2.conv.3
    """
    if path == "classifier":
        return "classifier.1"
    match = re.match(r"(features\.\w+)\.block\.(\w+)\.(\d)$", path)
    if match is None:                       # the stem and the head: ConvBNAct children
        return _number(model, path, depth=2)
    block, layer, index = match.groups()
    number = _position(model, f"{block}.block.{layer}")
    block = _number(model, block, depth=2)
    if layer == "project":
        return f"{block}.conv.{number + int(index)}"
    return f"{block}.conv.{number}.{index}"


def efficientnet_names(model, path):
    """EfficientNet and EfficientNetV2: ``features`` numbers stem, stages and head (0 … 8
    for B0); a block's ``block`` numbers [expand, depthwise, SE, project] (or the Fused-
    MBConv's [fused, project]); SE's two 1×1 convolutions are ``fc1`` and ``fc2``;
    ``classifier.1`` (after dropout).

    features.stage2.0.block.se.reduce → features.2.0.block.2.fc1
    """
    if path == "classifier":
        return "classifier.1"
    path = re.sub(r"\.se\.reduce$", ".se.fc1", path)
    path = re.sub(r"\.se\.expand$", ".se.fc2", path)
    match = re.match(r"(features\.\w+\.\d+)\.block\.(\w+)\.(.+)$", path)
    if match is None:                       # the stem and the head
        return _number(model, path, depth=2)
    block, layer, rest = match.groups()
    number = _position(model, f"{block}.block.{layer}")
    return f"{_number(model, block, depth=2)}.block.{number}.{rest}"


INCEPTION_V3_STEM = {"conv1": "Conv2d_1a_3x3", "conv2": "Conv2d_2a_3x3",
                     "conv3": "Conv2d_2b_3x3", "conv4": "Conv2d_3b_1x1",
                     "conv5": "Conv2d_4a_3x3"}
CONV_BN = {"0": "conv", "1": "bn"}          # a ConvBNAct's children, as torchvision's BasicConv2d


def inception_v3_names(model, path):
    """Inception-v3: torchvision keeps the modules at the top level (Mixed_5b, …, the
    auxiliary head ``AuxLogits``) and numbers a branch's convolutions from 1 in its name;
    the two halves of a split 1×3 / 3×1 convolution are ``a`` and ``b``:

    features.stem.conv1.0                       → Conv2d_1a_3x3.conv
    features.Mixed_5b.branch1x1.1               → Mixed_5b.branch1x1.bn
    features.Mixed_5b.branch5x5.1.0             → Mixed_5b.branch5x5_2.conv
    features.Mixed_5b.branch_pool.1.0           → Mixed_5b.branch_pool.conv  (after the pool)
    features.Mixed_7b.branch3x3.1.conv3x1.1     → Mixed_7b.branch3x3_2b.bn
    aux_logits.conv0.0                          → AuxLogits.conv0.conv
    """
    parts = path.split(".")
    if parts[0] == "aux_logits":
        return ".".join(["AuxLogits", parts[1]] + [CONV_BN[p] for p in parts[2:]])
    if parts[0] == "fc":
        return "fc"
    if parts[1] == "stem":
        return f"{INCEPTION_V3_STEM[parts[2]]}.{CONV_BN[parts[3]]}"
    module, branch, rest = parts[1], parts[2], parts[3:]
    if branch == "branch_pool":             # [pool, conv]: torchvision's pool is functional
        rest = rest[1:]
    if len(rest) == 1:                      # a single convolution: branch1x1.conv
        return f"{module}.{branch}.{CONV_BN[rest[0]]}"
    suffix = {"conv1x3": "a", "conv3x1": "b"}.get(rest[1], "") if len(rest) == 3 else ""
    return f"{module}.{branch}_{int(rest[0]) + 1}{suffix}.{CONV_BN[rest[-1]]}"


# ----------------------------------------------------------------------------- the table
Source = namedtuple("Source", "torchvision options names")
Source.__doc__ = """Where a variant's torchvision weights come from: torchvision's model
name, the options our constructor needs to build that very network, and the family's
name function (our module path → torchvision's)."""

RESNET_V1_5 = {"stride_on_3x3": True}
TORCH_BN_EPS = {"bn_eps": 1e-5}

TORCHVISION = {
    "alexnet_owt": Source("alexnet", {}, sequential_names),
    **{f"vgg{depth}{bn}": Source(f"vgg{depth}{bn}", {}, sequential_names)
       for depth in (11, 13, 16, 19) for bn in ("", "_bn")},
    "squeezenet1_0": Source("squeezenet1_0", {}, sequential_names),
    "squeezenet1_1": Source("squeezenet1_1", {}, sequential_names),
    "resnet18": Source("resnet18", {}, resnet_names),
    "resnet34": Source("resnet34", {}, resnet_names),
    "resnet50_b": Source("resnet50", {}, resnet_names),
    "resnet101": Source("resnet101", RESNET_V1_5, resnet_names),
    "resnet152": Source("resnet152", RESNET_V1_5, resnet_names),
    "wide_resnet50_2": Source("wide_resnet50_2", {}, resnet_names),
    "wide_resnet101_2": Source("wide_resnet101_2", {}, resnet_names),
    "resnext50_32x4d": Source("resnext50_32x4d", {}, resnet_names),
    "resnext101_32x8d": Source("resnext101_32x8d", {}, resnet_names),
    "resnext101_64x4d": Source("resnext101_64x4d", {}, resnet_names),
    **{f"densenet{depth}": Source(f"densenet{depth}", {}, densenet_names)
       for depth in (121, 161, 169, 201)},
    "mobilenet_v2": Source("mobilenet_v2", {}, mobilenet_v2_names),
    **{f"efficientnet_b{i}": Source(f"efficientnet_b{i}", TORCH_BN_EPS if i <= 4 else {},
                                    efficientnet_names) for i in range(8)},
    **{f"efficientnet_v2_{size}": Source(f"efficientnet_v2_{size}", {}, efficientnet_names)
       for size in "sml"},
    "inception_v3": Source("inception_v3", {"pool_counts_padding": True}, inception_v3_names),
}

# Our names whose torchvision weights belong to another build: a helpful error, not a guess.
USE_INSTEAD = {"resnet50": "resnet50_b", "alexnet": "alexnet_owt"}


def source(variant):
    """The ``Source`` of ``variant`` (ValueError naming the variants that have one)."""
    if variant in TORCHVISION:
        return TORCHVISION[variant]
    hint = (f"; torchvision's {TORCHVISION[USE_INSTEAD[variant]].torchvision} weights are "
            f"for {USE_INSTEAD[variant]!r}" if variant in USE_INSTEAD else "")
    raise ValueError(f"no torchvision weights for {variant!r}{hint}; variants with them: "
                     f"{', '.join(sorted(TORCHVISION))}")


def torchvision_keys(model, variant):
    """``{torchvision key: our key}`` for every parameter and buffer of ``model``."""
    names = source(variant).names
    table = {}
    for path, module in model.named_modules():
        arrays = [name for name, array in list(module._parameters.items())
                  + list(module._buffers.items()) if array is not None]
        if not arrays:
            continue
        theirs = names(model, path)
        for array in arrays:
            table[f"{theirs}.{array}"] = f"{path}.{array}"
    return table


# ----------------------------------------------------------------------------- build checks
def _first(model, kind):
    return next(m for m in model.modules() if isinstance(m, kind))


def _build_of(model, options):
    """The values ``options`` have in ``model`` as built (only the ones TORCHVISION uses)."""
    found = {}
    if "stride_on_3x3" in options:
        found["stride_on_3x3"] = tuple(model.layer2[0].conv2.stride) == (2, 2)
    if "bn_eps" in options:
        found["bn_eps"] = _first(model, nn.BatchNorm2d).eps
    if "pool_counts_padding" in options:
        found["pool_counts_padding"] = model.features.Mixed_5b.branch_pool[0].count_include_pad
    return found


def check_build(model, variant):
    """ValueError unless ``model`` is built as torchvision's network for ``variant``: with
    the wrong stride placement, ε or pooling, the weights would load and compute nonsense."""
    wanted = source(variant).options
    found = _build_of(model, wanted)
    wrong = {name: value for name, value in found.items() if value != wanted[name]}
    if wrong:
        settings = ", ".join(f"{name}={wanted[name]!r} (this model: {value!r})"
                             for name, value in wrong.items())
        raise ValueError(f"torchvision's {source(variant).torchvision} weights need "
                         f"{variant} built with {settings}; create_with_weights builds it so")


# ----------------------------------------------------------------------------- reading files
def read_state_dict(path):
    """``{key: numpy array}`` from a weights file: the one place file formats plug in.

    ``.npz`` is read here; ``.pth``/``.pt`` (PyTorch's zip and legacy pickle formats, plain
    or wrapped in ``{"state_dict": ...}``) and ``.safetensors`` by
    ``minicnn.io.load_state_dict_file``, which reads them without torch and without
    unpickling arbitrary code.
    """
    from minicnn.io import load_state_dict_file
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path} does not exist")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
            raise ValueError(f"weights file {path}: not a readable .npz of named arrays "
                             f"({str(error).splitlines()[0]})") from None
    if suffix in (".pth", ".pt", ".safetensors"):
        return load_state_dict_file(path)
    raise ValueError(f"weights file {path}: expected a .pth, .pt, .safetensors or .npz file, "
                     f"got {suffix or 'no suffix'!r}")


# ----------------------------------------------------------------------------- loading
def _describe(keys, limit=5):
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def convert_state_dict(model, state, variant, origin="the state dict"):
    """torchvision-named ``state`` → ours for ``model``, every key and shape checked.

    ``origin`` names the file in errors. A state dict already in our names (a minicnn
    checkpoint of the same variant) passes through, checked the same way.
    """
    state = {key: value for key, value in state.items()
             if not key.endswith(IGNORED_SUFFIXES)}
    shapes = {key: tuple(p.shape) for key, p in model.named_parameters()}
    shapes.update((key, tuple(b.shape)) for key, b in model.named_buffers() if b is not None)
    if set(state) == set(shapes):
        table = {key: key for key in shapes}
    else:
        table = torchvision_keys(model, variant)
    missing = [key for key in table if key not in state]
    if missing:
        raise ValueError(f"{origin}: missing {len(missing)} key(s) that torchvision's "
                         f"{source(variant).torchvision} has: {_describe(missing)}")
    unexpected = [key for key in state if key not in table]
    if unexpected:
        raise ValueError(f"{origin}: {len(unexpected)} unexpected key(s) for {variant}: "
                         f"{_describe(unexpected)}")
    converted = {}
    for theirs, mine in table.items():
        value = np.asarray(state[theirs])
        expected = shapes[mine]
        if value.shape != expected:
            raise ValueError(f"{origin}: {theirs} has shape {value.shape}, {variant} expects "
                             f"{expected} (for {mine})")
        if value.dtype.kind != "f":
            raise ValueError(f"{origin}: {theirs} holds {value.dtype} values, expected "
                             f"floating point")
        converted[mine] = value
    return converted


def load_pretrained(model, state_dict_or_path, variant):
    """Load torchvision's weights for ``variant`` into ``model`` (built as that variant).

    ``state_dict_or_path``: a ``{key: array}`` dict with torchvision's names, or a path to
    a ``.pth``/``.pt``/``.safetensors``/``.npz`` file of one. Everything is checked before
    anything is copied (the build, then every key and shape); an error is one line naming
    the file, the key, what was expected and what was found. Returns ``model``.
    """
    if isinstance(state_dict_or_path, dict):
        state, origin = state_dict_or_path, "the state dict"
    else:
        origin = f"weights file {os.fspath(state_dict_or_path)}"
        state = read_state_dict(state_dict_or_path)
    check_build(model, variant)
    model.load_state_dict(convert_state_dict(model, state, variant, origin), strict=True)
    return model


def create_with_weights(name, path, **options):
    """``architectures.create(name, **options)`` built as torchvision's network, with the
    weights of ``path`` (a file or a state dict) loaded into it.

    The build options torchvision's weights need (``TORCHVISION``) are added; an option that
    contradicts them is an error. A file with another number of classes than the 1000 of
    ImageNet needs ``num_classes`` (the shape error says which); a new head for fine-tuning
    is a step after this one.
    """
    import architectures
    required = source(name).options
    clashes = {key: value for key, value in options.items()
               if key in required and value != required[key]}
    if clashes:
        raise ValueError(f"{name}: torchvision's {source(name).torchvision} weights need "
                         f"{required}, got {clashes}")
    model = architectures.create(name, **{**options, **required})
    return load_pretrained(model, path, name)
