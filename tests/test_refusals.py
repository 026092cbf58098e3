"""The engine and the zoo refuse what cannot be right, with a message naming what was
expected and what arrived: a gradient of the wrong shape, a network of zero classes."""
import numpy as np
import pytest

import architectures
from minicnn.tensor import Tensor


@pytest.mark.parametrize("shape", [(2,), (3, 1), (1, 3), ()])
def test_backward_refuses_a_gradient_of_another_shape(shape):
    x = Tensor(np.ones(3), requires_grad=True)
    y = x * 2
    with pytest.raises(ValueError, match=r"output's shape \(3,\), got"):
        y.backward(np.ones(shape))
    assert x.grad is None                      # nothing accumulated before the refusal


def test_backward_takes_a_gradient_of_the_output_shape():
    x = Tensor(np.ones(3), requires_grad=True)
    (x * 2).backward(np.array([1.0, 10.0, 100.0]))
    np.testing.assert_array_equal(x.grad, [2.0, 20.0, 200.0])


# ----------------------------------------------------------------------------- create()

@pytest.mark.parametrize("name, in_channels, num_classes, input_size", [
    ("lenet5", 1, 10, 28), ("lenet5_lecun98", 1, 10, 32), ("resnet20", 3, 10, 32),
    ("vgg16_bn_cifar", 3, 10, 32), ("nin_cifar", 3, 10, 32), ("densenet_bc_100_12", 3, 10, 32),
    ("resnet50", 3, 1000, 224),
])
def test_the_registry_knows_each_variants_published_input_and_classes(
        name, in_channels, num_classes, input_size):
    entry = architectures.entry(name)
    assert (entry.in_channels, entry.num_classes, entry.input_size) == \
        (in_channels, num_classes, input_size)


def test_create_builds_the_variant_as_published():
    assert architectures.create("lenet5_lecun98", num_classes=10).num_parameters() == 60_000
    assert architectures.create("lenet5_lecun98").num_parameters() == 60_000
    model = architectures.create("resnet20")
    x = Tensor(np.zeros((1, 3, 32, 32), np.float32))
    assert model.eval()(x).shape == (1, 10)
    lenet = architectures.create("lenet5").eval()
    assert lenet(Tensor(np.zeros((1, 1, 28, 28), np.float32))).shape == (1, 10)


def test_create_still_takes_other_classes_and_channels():
    model = architectures.create("lenet5", num_classes=3, in_channels=3).eval()
    assert model(Tensor(np.zeros((2, 3, 28, 28), np.float32))).shape == (2, 3)


@pytest.mark.parametrize("key, value", [("num_classes", 0), ("num_classes", -1),
                                        ("in_channels", 0), ("num_classes", 2.5),
                                        ("num_classes", True), ("in_channels", "3")])
def test_create_refuses_impossible_classes_and_channels(key, value):
    with pytest.raises(ValueError, match=f"{key} must be a positive integer, got"):
        architectures.create("lenet5", **{key: value})


def test_register_variant_registers_a_builder_with_its_settings():
    from architectures.lenet5 import LeNet5Modern as LeNet5
    constructor = architectures.register_variant(
        "lenet5_test_variant", LeNet5, 28, in_channels=1, num_classes=4,
        description="a test variant")
    try:
        entry = architectures.entry("lenet5_test_variant")
        assert (entry.in_channels, entry.num_classes, entry.description) == (1, 4, "a test variant")
        model = architectures.create("lenet5_test_variant").eval()
        assert model(Tensor(np.zeros((1, 1, 28, 28), np.float32))).shape == (1, 4)
        assert constructor(num_classes=2).eval()(
            Tensor(np.zeros((1, 1, 28, 28), np.float32))).shape == (1, 2)
    finally:
        architectures._REGISTRY.pop("lenet5_test_variant", None)
