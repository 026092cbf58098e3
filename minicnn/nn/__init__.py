"""Layers and networks: ``Module``, ``Parameter`` and the layers of every architecture."""
from minicnn.nn.module import Module, Parameter
from minicnn.nn.container import Sequential, ModuleList, ModuleDict
from minicnn.nn.layers import (Identity, Flatten, Linear, ReLU, ReLU6, LeakyReLU, Sigmoid,
                               Tanh, ScaledTanh, SiLU, Swish, HardSigmoid, HardSwish, Softmax,
                               Dropout, Dropout2d, DropPath)
from minicnn.nn.conv import Conv2d, ZeroPad2d
from minicnn.nn.pool import (MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, AdaptiveMaxPool2d,
                             GlobalAvgPool2d)
from minicnn.nn.resample import UpsamplingNearest2d, MaxPool2dSame
from minicnn.nn.norm import BatchNormNd, BatchNorm1d, BatchNorm2d, LocalResponseNorm
from minicnn.nn import init
from minicnn.nn.fold import fold_batchnorm, find_foldable_pairs
from minicnn.nn.convolutionize import convolutionize
from minicnn.nn.transfer import (freeze, unfreeze, trainable_parameters, head_name,
                                 replace_head, replace_module, freeze_backbone,
                                 freeze_all_but_last, load_partial,
                                 freeze_batchnorm, unfreeze_batchnorm, FrozenBatchNorm1d,
                                 FrozenBatchNorm2d)
