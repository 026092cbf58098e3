"""The kernel registry and its reference mode.

* Every registered kernel has a reference version, and the registry picks the version by
  device and mode.
* ``kernel_mode("reference")`` (``MINICNN_KERNELS=reference``) runs whole networks on the
  plain-NumPy reference kernels, with the textbook im2col+GEMM convolution: for every zoo
  family's default variant (the one its command line trains) at a small input, forward and
  backward there equal the fast mode's (Numba kernels, Winograd, blocked im2col,
  depthwise...) in float64. The heavy families are marked slow.
"""
import copy
import importlib
import pkgutil

import numpy as np
import pytest

import architectures
import minicnn.kernels
from minicnn import Tensor, functional as F
from minicnn.functional.dropout import manual_seed
from minicnn.kernels.registry import KERNELS, current_mode, kernel_mode, thread_kernel_mode


def _load_every_kernel_module():
    for info in pkgutil.iter_modules(minicnn.kernels.__path__):
        importlib.import_module(f"minicnn.kernels.{info.name}")


_load_every_kernel_module()


def test_every_kernel_of_this_package_is_registered_with_its_versions():
    names = {"im2col", "col2im", "depthwise_forward", "depthwise_backward_input",
             "depthwise_backward_weight", "max_pool_forward", "max_pool_values",
             "max_pool_backward",
             "avg_pool_forward", "avg_pool_backward", "winograd_input_transform",
             "winograd_input_transform_adjoint", "winograd_output_transform",
             "winograd_output_transform_adjoint"}
    assert names <= set(KERNELS)
    for name in names:
        kernel = KERNELS[name]
        assert kernel.reference is not None and kernel.numba is not None, name
        # Winograd has no CUDA version: on the GPU its (xp-generic) reference runs
        assert (kernel.cuda is None) == name.startswith("winograd"), name


def test_the_mode_picks_the_version():
    kernel = KERNELS["im2col"]
    assert current_mode() == "fast"
    assert kernel.version(on_gpu=False) is kernel.numba
    assert kernel.version(on_gpu=True) is kernel.cuda
    assert KERNELS["winograd_input_transform"].version(on_gpu=True) is \
        KERNELS["winograd_input_transform"].reference
    with kernel_mode("reference"):
        assert kernel.version(on_gpu=False) is kernel.reference
        assert kernel.version(on_gpu=True) is kernel.reference
    with pytest.raises(ValueError, match="expected one of fast, reference, got 'slow'"):
        with kernel_mode("slow"):
            pass


def test_a_thread_can_run_reference_kernels_while_the_others_stay_fast():
    import threading
    seen = {}
    with thread_kernel_mode("reference"):
        assert current_mode() == "reference"
        assert KERNELS["im2col"].version(on_gpu=False) is KERNELS["im2col"].reference
        other = threading.Thread(target=lambda: seen.update(mode=current_mode()))
        other.start()
        other.join()
    assert seen["mode"] == "fast" and current_mode() == "fast"
    with kernel_mode("reference"):                  # the process's mode reaches every thread
        other = threading.Thread(target=lambda: seen.update(mode=current_mode()))
        other.start()
        other.join()
    assert seen["mode"] == "reference"
    with pytest.raises(ValueError, match="thread_kernel_mode: expected one of fast, reference"):
        with thread_kernel_mode("slow"):
            pass


# Each family's default variant (its CLI's ``--variant`` default) and a small input it can
# take, one input channel and ten classes as the zoo tests build them.
DEFAULT_VARIANTS = {
    "lenet5": ("lenet5", 28),
    "resnet": ("resnet20", 16),
    "mobilenet_v1": ("mobilenet_v1_050_128", 32),
    "bn_inception": ("bn_inception", 16),
    "nin": ("nin_cifar", 16),
    "senet": ("se_resnet20", 16),
    "squeezenet": ("squeezenet1_0_simple_bypass", 48),
    "mobilenet_v2": ("mobilenet_v2", 32),
    "wide_resnet": ("wrn_16_4", 16),
    "efficientnet": ("efficientnet_b0", 32),
    "densenet": ("densenet121", 32),
    "googlenet": ("googlenet", 47),
    "vgg": ("vgg16_bn_cifar", 32),
    "alexnet": ("alexnet", 67),
    "zfnet": ("zfnet", 63),
    "inception_v3": ("inception_v3", 75),
    "inception_v4": ("inception_v4", 75),
    "inception_resnet": ("inception_resnet_v1", 75),
    "resnext": ("resnext50_32x4d", 32),
    "xception": ("xception", 71),
    "efficientnet_v2": ("efficientnet_v2_s", 32),
    "efficientdet": ("efficientdet_d0", 128),
}
# Kept in the default suite: LeNet-5, a ResNet, depthwise nets, an Inception, and the
# others that take a second or two; the rest are slow (float64 and NumPy reference loops).
FAST_FAMILIES = {"lenet5", "resnet", "mobilenet_v1", "bn_inception", "nin", "senet",
                 "mobilenet_v2"}


def test_every_family_has_a_default_variant_here():
    assert set(DEFAULT_VARIANTS) == set(architectures.FAMILIES)


def _forward_and_backward(model, x, labels):
    manual_seed(0)                              # the same dropout masks in both modes
    outputs = model(Tensor(x))
    if isinstance(outputs, tuple) and isinstance(outputs[0], list):
        # a detector: per-level class and box maps, reduced to one number
        outputs = tuple(m for level_maps in outputs for m in level_maps)
        loss = sum((m * m).mean() for m in outputs)
    else:
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        loss = F.cross_entropy(outputs[0], labels)
        for auxiliary in outputs[1:]:
            loss = loss + F.cross_entropy(auxiliary, labels) * 0.3
    loss.backward()
    return ([o.numpy() for o in outputs],
            {name: p.grad for name, p in model.named_parameters()})


def _assert_close(got, expected, what):
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.abs(got - expected).max() <= 1e-10 * scale, what


@pytest.mark.parametrize("family", [
    family if family in FAST_FAMILIES else pytest.param(family, marks=pytest.mark.slow)
    for family in architectures.FAMILIES])
def test_reference_mode_equals_fast_mode_for_the_whole_network(family):
    name, size = DEFAULT_VARIANTS[family]
    # Evaluation mode: batch norm then applies its running statistics, a fixed affine map.
    # In training mode, with two samples at a few pixels, a channel's batch variance can be
    # tiny, and normalizing by it magnifies 1e-15 differences in summation order (Winograd's
    # against im2col's) to 1e-7: that would measure batch norm's conditioning, not the
    # kernels. (Dropout is then off too; its masks are seeded alike anyway.)
    model = architectures.create(name, num_classes=10, in_channels=1).double()
    model.eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, size, size))
    labels = rng.integers(0, 10, 2)
    # Two identical copies (same weights and batch-norm statistics): one per mode
    fast_model, reference_model = copy.deepcopy(model), copy.deepcopy(model)
    fast_outputs, fast_grads = _forward_and_backward(fast_model, x, labels)
    with kernel_mode("reference"):
        reference_outputs, reference_grads = _forward_and_backward(reference_model, x, labels)
    for got, expected in zip(reference_outputs, fast_outputs):
        _assert_close(got, expected, f"{name}: output")
    assert reference_grads.keys() == fast_grads.keys()
    # (Auxiliary classifiers, GoogLeNet's and Inception-v3's, sit out evaluation mode: no
    # gradient in either mode.)
    compared = 0
    for parameter, expected in fast_grads.items():
        got = reference_grads[parameter]
        assert (got is None) == (expected is None), f"{name}: {parameter}"
        if expected is not None:
            _assert_close(got, expected, f"{name}: gradient of {parameter}")
            compared += 1
    assert compared >= 0.8 * len(fast_grads), f"{name}: {compared} of {len(fast_grads)}"
