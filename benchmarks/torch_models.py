"""The benchmark networks written in ``torch.nn``, layer for layer the same as minicnn's.

Used only when PyTorch happens to be installed (it is never a dependency of minicnn);
torchvision is not needed. Each builder matches the minicnn registry entry of the same
name in layers, widths and parameter count (checked by ``benchmarks/worker.py``, which
prints both counts).
"""
import torch
from torch import nn


def lenet5(num_classes=10):
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes))


# ----------------------------------------------------------------------------- ResNet

class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """ResNet-50's block with the stride on the 3×3; with ``groups`` and
    ``width_per_group`` ResNeXt's (torchvision's rule: width = planes·d/64·C)."""
    expansion = 4

    def __init__(self, cin, planes, stride, groups=1, width_per_group=64):
        super().__init__()
        cout = planes * 4
        width = planes * width_per_group // 64 * groups
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        return torch.relu(self.bn3(self.conv3(y)) + self.shortcut(x))


def _resnet(block, depths, num_classes, cifar_stem, **block_options):
    if cifar_stem:
        stem = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    else:
        stem = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                nn.MaxPool2d(3, 2, 1)]
    layers, cin = list(stem), 64
    for stage, (width, depth) in enumerate(zip((64, 128, 256, 512), depths)):
        for i in range(depth):
            stride = 2 if stage > 0 and i == 0 else 1
            layers.append(block(cin, width, stride, **block_options))
            cin = width * block.expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


def resnet18_cifar(num_classes=10):
    return _resnet(BasicBlock, (2, 2, 2, 2), num_classes, cifar_stem=True)


def resnet50(num_classes=1000):
    return _resnet(Bottleneck, (3, 4, 6, 3), num_classes, cifar_stem=False)


def resnext50_32x4d(num_classes=1000):
    return _resnet(Bottleneck, (3, 4, 6, 3), num_classes, cifar_stem=False, groups=32,
                   width_per_group=4)


# ----------------------------------------------------------------------------- VGG-16-BN (CIFAR)

def vgg16_bn_cifar(num_classes=10):
    layers, cin = [], 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
            cin = v
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512, num_classes))


# ----------------------------------------------------------------------------- MobileNetV2

def _conv_bn(cin, cout, k, stride, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU6()] if act else layers


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        hidden = cin * t
        layers = [] if t == 1 else _conv_bn(cin, hidden, 1, 1)
        layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden)
        layers += _conv_bn(hidden, cout, 1, 1, act=False)
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.block(x) if self.residual else self.block(x)


def mobilenet_v2(num_classes=10):
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1)]
    layers, cin = _conv_bn(3, 32, 3, 2), 32
    for t, c, n, s in settings:
        for i in range(n):
            layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
            cin = c
    layers += _conv_bn(cin, 1280, 1, 1)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
                         nn.Linear(1280, num_classes))


# ----------------------------------------------------------------------------- EfficientNet-B0

def _make_divisible(value, divisor=8):
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_bn_act(cin, cout, k, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)]
    return layers + [nn.SiLU()] if act else layers


class SqueezeExcitation(nn.Module):
    def __init__(self, channels, squeeze):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x):
        gate = torch.sigmoid(self.expand(nn.functional.silu(self.reduce(x.mean((2, 3), keepdim=True)))))
        return x * gate


class DropPath(nn.Module):
    """Stochastic depth: drop the whole branch of a sample with probability p."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = 1 - self.p
        return x * x.new_empty(x.shape[0], 1, 1, 1).bernoulli_(keep) / keep


class MBConv(nn.Module):
    def __init__(self, cin, cout, k, stride, t, drop_path):
        super().__init__()
        hidden = _make_divisible(cin * t) if t != 1 else cin
        layers = [] if hidden == cin else _conv_bn_act(cin, hidden, 1)
        layers += _conv_bn_act(hidden, hidden, k, stride, groups=hidden)
        layers.append(SqueezeExcitation(hidden, max(1, int(cin * 0.25))))
        layers += _conv_bn_act(hidden, cout, 1, act=False)
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout
        self.drop_path = DropPath(drop_path) if self.residual else nn.Identity()

    def forward(self, x):
        return x + self.drop_path(self.block(x)) if self.residual else self.block(x)


# EfficientNet-B0's Table 1: (expansion t, kernel, stride, C_in, C_out, repeats) per stage
B0_STAGES = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2),
             (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4),
             (6, 3, 1, 192, 320, 1)]


def _b0_stages():
    """The stem and one nn.Sequential of MBConv blocks per stage, drop path 0.2·i/16."""
    total, index, stages = sum(row[-1] for row in B0_STAGES), 0, []
    for t, k, stride, cin, cout, repeats in B0_STAGES:
        blocks = []
        for i in range(repeats):
            blocks.append(MBConv(cin if i == 0 else cout, cout, k, stride if i == 0 else 1, t,
                                 0.2 * index / total))
            index += 1
        stages.append(nn.Sequential(*blocks))
    return nn.Sequential(*_conv_bn_act(3, 32, 3, 2)), stages


def efficientnet_b0(num_classes=1000):
    """EfficientNet-B0 (Table 1): MBConv blocks with SE and SiLU, drop path 0.2·i/16."""
    stem, stages = _b0_stages()
    return nn.Sequential(stem, *stages, *_conv_bn_act(320, 1280, 1), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Dropout(0.2), nn.Linear(1280, num_classes))


# ----------------------------------------------------------------------------- EfficientDet-D0
# As architectures/efficientdet.py builds it (the official google/automl layout): the B0
# backbone without its head, P6/P7 by 1×1 conv + BN and SAME max pools, 3 BiFPN layers of
# width 64 with fast normalised fusion, class and box networks of depth 3 whose separable
# convolutions are shared over the levels and whose batch norms are not. BN ε 1e-3,
# momentum 0.01.

def _bn(channels):
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class SeparableConv2d(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
                         nn.Conv2d(cin, cout, 1))


class MaxPool2dSame(nn.Module):
    """TensorFlow's SAME max pooling: pad with −∞, the odd cell at the end."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x):
        pads = []
        for size in (x.shape[3], x.shape[2]):
            total = max((-(-size // self.stride) - 1) * self.stride + self.kernel - size, 0)
            pads += [total // 2, total - total // 2]
        x = nn.functional.pad(x, pads, value=float("-inf"))
        return nn.functional.max_pool2d(x, self.kernel, self.stride)


def _resample(cin, cout, from_level, to_level):
    layers = [] if cin == cout else [nn.Conv2d(cin, cout, 1), _bn(cout)]
    steps = to_level - from_level
    if steps > 0:
        layers.append(MaxPool2dSame(2 ** steps + 1, 2 ** steps))
    elif steps < 0:
        layers.append(nn.Upsample(scale_factor=2 ** -steps, mode="nearest"))
    return nn.Sequential(*layers) if layers else nn.Identity()


class FusionNode(nn.Module):
    """Resample each input, O = Σ wᵢ·Iᵢ / (ε + Σ wⱼ) with w = ReLU(weight), then
    SiLU → separable 3×3 → BN."""

    def __init__(self, level, input_levels, input_channels, width):
        super().__init__()
        self.resample = nn.ModuleList([_resample(c, width, source, level)
                                       for source, c in zip(input_levels, input_channels)])
        self.weight = nn.Parameter(torch.ones(len(input_levels)))
        self.conv, self.bn = SeparableConv2d(width, width), _bn(width)

    def forward(self, *inputs):
        weights = torch.relu(self.weight)
        weights = weights / (weights.sum() + 1e-4)
        fused = sum(w * resample(x) for w, resample, x in zip(weights, self.resample, inputs))
        return self.bn(self.conv(nn.functional.silu(fused)))


def _bifpn_nodes(min_level=3, max_level=7):
    """architectures.efficientdet.bifpn_nodes: (level, indices of the fused maps). Copied,
    not imported: this file runs in an interpreter that has torch and may lack minicnn's
    own dependencies (Numba), which importing ``architectures`` would load."""
    maps_of = {level: [i] for i, level in enumerate(range(min_level, max_level + 1))}
    count, nodes = max_level - min_level + 1, []
    for level in range(max_level - 1, min_level - 1, -1):
        nodes.append((level, [maps_of[level][-1], maps_of[level + 1][-1]]))
        maps_of[level].append(count)
        count += 1
    for level in range(min_level + 1, max_level + 1):
        nodes.append((level, maps_of[level] + [maps_of[level - 1][-1]]))
        maps_of[level].append(count)
        count += 1
    return nodes


class BiFPNLayer(nn.Module):
    def __init__(self, in_channels, width, levels=(3, 4, 5, 6, 7)):
        super().__init__()
        level_of, channels_of = list(levels), list(in_channels)
        self.graph, nodes = _bifpn_nodes(levels[0], levels[-1]), []
        for level, inputs in self.graph:
            nodes.append(FusionNode(level, [level_of[i] for i in inputs],
                                    [channels_of[i] for i in inputs], width))
            level_of.append(level)
            channels_of.append(width)
        self.nodes = nn.ModuleList(nodes)
        self.outputs = [max(i for i, lv in enumerate(level_of) if lv == level)
                        for level in levels]

    def forward(self, features):
        maps = list(features)
        for node, (_, inputs) in zip(self.nodes, self.graph):
            maps.append(node(*[maps[i] for i in inputs]))
        return [maps[i] for i in self.outputs]


class HeadNet(nn.Module):
    def __init__(self, width, outputs_per_anchor, depth=3, levels=5, anchors=9):
        super().__init__()
        self.convs = nn.ModuleList([SeparableConv2d(width, width) for _ in range(depth)])
        self.norms = nn.ModuleList([nn.ModuleList([_bn(width) for _ in range(levels)])
                                    for _ in range(depth)])
        self.predict = SeparableConv2d(width, anchors * outputs_per_anchor)

    def forward(self, features):
        outputs = []
        for level, x in enumerate(features):
            for conv, norms in zip(self.convs, self.norms):
                x = nn.functional.silu(norms[level](conv(x)))
            outputs.append(self.predict(x))
        return outputs


class EfficientDetD0(nn.Module):
    def __init__(self, num_classes=90, width=64, bifpn_depth=3):
        super().__init__()
        self.stem, stages = _b0_stages()
        self.stages = nn.ModuleList(stages)
        self.taps = (2, 4, 6)                    # stages ending at strides 8, 16, 32: P3–P5
        self.extra = nn.ModuleList([_resample(320, width, 5, 6), _resample(width, width, 6, 7)])
        channels = [40, 112, 320, width, width]
        layers = []
        for _ in range(bifpn_depth):
            layers.append(BiFPNLayer(channels, width))
            channels = [width] * 5
        self.bifpn = nn.ModuleList(layers)
        self.class_net, self.box_net = HeadNet(width, num_classes), HeadNet(width, 4)

    def forward(self, x):
        x, features = self.stem(x), []
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index in self.taps:
                features.append(x)
        for resample in self.extra:
            features.append(resample(features[-1]))
        for layer in self.bifpn:
            features = layer(features)
        return self.class_net(features), self.box_net(features)


def efficientdet_d0(num_classes=90):
    return EfficientDetD0(num_classes)


# ----------------------------------------------------------------------------- DenseNet-121

class DenseLayer(nn.Module):
    def __init__(self, cin, growth):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(),
                                  nn.Conv2d(cin, 4 * growth, 1, bias=False),
                                  nn.BatchNorm2d(4 * growth), nn.ReLU(),
                                  nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


def densenet121(num_classes=10, growth=32, blocks=(6, 12, 24, 16)):
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
              nn.MaxPool2d(3, 2, 1)]
    c = 64
    for i, n in enumerate(blocks):
        for _ in range(n):
            layers.append(DenseLayer(c, growth))
            c += growth
        if i < len(blocks) - 1:
            layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False),
                       nn.AvgPool2d(2)]
            c //= 2
    layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(c, num_classes)]
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- GoogLeNet

class Inception(nn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, pool_proj):
        super().__init__()
        relu = nn.ReLU
        self.b1 = nn.Sequential(nn.Conv2d(cin, c1, 1), relu())
        self.b2 = nn.Sequential(nn.Conv2d(cin, c3r, 1), relu(), nn.Conv2d(c3r, c3, 3, padding=1), relu())
        self.b3 = nn.Sequential(nn.Conv2d(cin, c5r, 1), relu(), nn.Conv2d(c5r, c5, 5, padding=2), relu())
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), nn.Conv2d(cin, pool_proj, 1), relu())

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


def googlenet(num_classes=10):
    """GoogLeNet (Table 1) with conv biases, LRN and real 5×5 kernels; no auxiliary heads."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0),
        nn.Conv2d(64, 64, 1), nn.ReLU(), nn.Conv2d(64, 192, 3, padding=1), nn.ReLU(),
        nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0), nn.MaxPool2d(3, 2, ceil_mode=True),
        Inception(192, 64, 96, 128, 16, 32, 32), Inception(256, 128, 128, 192, 32, 96, 64),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        Inception(480, 192, 96, 208, 16, 48, 64), Inception(512, 160, 112, 224, 24, 64, 64),
        Inception(512, 128, 128, 256, 24, 64, 64), Inception(512, 112, 144, 288, 32, 64, 64),
        Inception(528, 256, 160, 320, 32, 128, 128), nn.MaxPool2d(3, 2, ceil_mode=True),
        Inception(832, 256, 160, 320, 32, 128, 128), Inception(832, 384, 192, 384, 48, 128, 128),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.4), nn.Linear(1024, num_classes))


BUILDERS = {"lenet5": lenet5, "resnet18_cifar": resnet18_cifar, "resnet50_b": resnet50,
            "vgg16_bn_cifar": vgg16_bn_cifar, "mobilenet_v2": mobilenet_v2,
            "densenet121": densenet121, "googlenet": googlenet,
            "resnext50_32x4d": resnext50_32x4d, "efficientnet_b0": efficientnet_b0,
            "efficientdet_d0": efficientdet_d0}
