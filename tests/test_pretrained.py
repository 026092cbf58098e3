"""torchvision's weights in the zoo: every variant computes what torchvision computes.

The fixtures (tests/fixtures/torchvision/, made once by make_fixtures.py with torch in a
side environment) hold, per torchvision model, the manifest of its state dict (key, shape,
dtype, in torchvision's order) and the logits torchvision computed in eval mode with
weights that ``synthetic_weights`` regenerates here from the key names. A test writes
those weights to a ``.safetensors`` file with torchvision's names, loads it through
``create_with_weights`` and compares logits:

    relative error = max |ours − torchvision| / max |torchvision|  ≤ 1e-4

A handful of variants run by default; the rest are marked slow (``pytest -m slow``).
"""
import gzip
import json
import os

import numpy as np
import pytest

from minicnn import Tensor, no_grad
from architectures import create
from architectures.pretrained import (TORCHVISION, convert_state_dict, create_with_weights,
                                      load_pretrained, read_state_dict, source,
                                      torchvision_keys)
from tests.fixtures.torchvision.synthetic_weights import synthetic_input, synthetic_state_dict

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "torchvision")
DEFAULT_VARIANTS = {"resnet18", "mobilenet_v2", "squeezenet1_1", "densenet121",
                    "efficientnet_b0"}
TOLERANCE = 1e-4
# Where torchvision's own float32 logits are further than this from its float64 ones, the
# synthetic network is too ill-conditioned for a float32 comparison to mean anything (two
# correct float32 programs disagree by more than the tolerance): compare in float64.
CONDITIONING_LIMIT = 1e-5


def manifest(torchvision_name):
    with gzip.open(os.path.join(FIXTURES, "manifests", f"{torchvision_name}.json.gz")) as file:
        return json.load(file)


def expected_logits(torchvision_name, dtype="float32"):
    with np.load(os.path.join(FIXTURES, "logits.npz")) as logits:
        return logits[torchvision_name if dtype == "float32" else f"{torchvision_name}_float64"]


def relative_error(found, reference):
    return float(np.abs(found - reference).max() / np.abs(reference).max())


def write_safetensors(state, path):
    try:
        from minicnn.io import save_safetensors
    except ImportError:
        save_safetensors = pytest.importorskip("safetensors.numpy").save_file
    save_safetensors({key: np.ascontiguousarray(value) for key, value in state.items()},
                     str(path))
    return path


def run(model, record, dtype=np.float32):
    x = synthetic_input(record["input_seed"], record["input_shape"]).astype(dtype)
    with no_grad():
        return model.eval()(Tensor(x)).data[0]


@pytest.mark.parametrize("variant", [
    name if name in DEFAULT_VARIANTS else pytest.param(name, marks=pytest.mark.slow)
    for name in TORCHVISION])
def test_outputs_equal_torchvision(variant, tmp_path):
    torchvision_name = source(variant).torchvision
    record = manifest(torchvision_name)
    path = write_safetensors(synthetic_state_dict(record["keys"]),
                             tmp_path / f"{torchvision_name}.safetensors")
    model = create_with_weights(variant, path)
    if record["float32_vs_float64_relative_error"] <= CONDITIONING_LIMIT:
        error = relative_error(run(model, record), expected_logits(torchvision_name))
    else:
        error = relative_error(run(model.double(), record, np.float64),
                               expected_logits(torchvision_name, "float64"))
    assert error <= TOLERANCE, f"{variant}: relative error {error:.2e}"


# Key tables only (a model is built, nothing runs): one more variant of most families by
# default; building the large ones (VGG, AlexNet's 61M parameters) is the slow part.
DEFAULT_KEY_TABLES = {"squeezenet1_0", "resnet50_b", "resnet101", "resnext50_32x4d",
                      "densenet161", "efficientnet_b1", "efficientnet_v2_s", "inception_v3"}


@pytest.mark.parametrize("variant", [
    name if name in DEFAULT_KEY_TABLES else pytest.param(name, marks=pytest.mark.slow)
    for name in TORCHVISION])
def test_every_torchvision_key_has_a_home(variant):
    """The key table covers torchvision's state dict exactly: every key once, no extra."""
    entry = TORCHVISION[variant]
    keys = {key for key, _, _ in manifest(entry.torchvision)["keys"]
            if not key.endswith("num_batches_tracked")}
    table = torchvision_keys(create(variant, **entry.options), variant)
    assert set(table) == keys
    assert len(set(table.values())) == len(table), "two torchvision keys share a target"


# ----------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def resnet18_state():
    return synthetic_state_dict(manifest("resnet18")["keys"])


def test_a_missing_key_is_named_and_nothing_is_loaded(resnet18_state, tmp_path):
    state = dict(resnet18_state)
    del state["layer3.1.bn2.running_var"]
    path = write_safetensors(state, tmp_path / "broken.safetensors")
    model = create("resnet18")
    before = model.state_dict()
    with pytest.raises(ValueError, match=r"broken\.safetensors: missing 1 key.*"
                                         r"layer3\.1\.bn2\.running_var"):
        load_pretrained(model, path, "resnet18")
    after = model.state_dict()
    assert all(np.array_equal(before[key], after[key]) for key in before)


def test_an_unexpected_key_is_named(resnet18_state):
    state = {**resnet18_state, "layer5.0.conv1.weight": np.zeros((1, 1, 1, 1), np.float32)}
    with pytest.raises(ValueError, match=r"unexpected key.*layer5\.0\.conv1\.weight"):
        load_pretrained(create("resnet18"), state, "resnet18")


def test_a_wrong_shape_names_key_expected_and_found(resnet18_state, tmp_path):
    state = {**resnet18_state, "fc.weight": np.zeros((10, 512), np.float32)}
    path = write_safetensors(state, tmp_path / "ten_classes.safetensors")
    with pytest.raises(ValueError) as error:
        load_pretrained(create("resnet18"), path, "resnet18")
    message = str(error.value)
    assert "ten_classes.safetensors" in message and "fc.weight" in message
    assert "(10, 512)" in message and "(1000, 512)" in message
    assert "\n" not in message


def test_another_class_count_loads_when_asked_for(resnet18_state):
    state = {**resnet18_state, "fc.weight": np.ones((10, 512), np.float32),
             "fc.bias": np.ones(10, np.float32)}
    model = create_with_weights("resnet18", state, num_classes=10)
    assert model.fc.weight.shape == (10, 512)
    assert np.array_equal(model.layer1[0].conv1.weight.data, state["layer1.0.conv1.weight"])


def test_integer_arrays_are_refused(resnet18_state):
    state = {**resnet18_state, "fc.bias": np.zeros(1000, np.int64)}
    with pytest.raises(ValueError, match=r"fc\.bias holds int64 values, expected floating"):
        load_pretrained(create("resnet18"), state, "resnet18")


def test_the_paper_build_refuses_v1_5_weights():
    """torchvision's ResNet-101 strides on the 3×3; the paper's build would load the same
    shapes and compute something else, so it is refused."""
    with pytest.raises(ValueError, match=r"stride_on_3x3=True \(this model: False\)"):
        load_pretrained(create("resnet101"), {}, "resnet101")


def test_efficientnet_b0_needs_torch_batch_norm_epsilon():
    with pytest.raises(ValueError, match=r"bn_eps=1e-05 \(this model: 0\.001\)"):
        load_pretrained(create("efficientnet_b0"), {}, "efficientnet_b0")
    with pytest.raises(ValueError, match=r"need \{'bn_eps': 1e-05\}, got \{'bn_eps': 0\.001\}"):
        create_with_weights("efficientnet_b0", {}, bn_eps=1e-3)


def test_a_variant_without_torchvision_weights_points_to_the_right_one():
    with pytest.raises(ValueError, match=r"torchvision's resnet50 weights are for 'resnet50_b'"):
        create_with_weights("resnet50", {})
    with pytest.raises(ValueError, match=r"no torchvision weights for 'lenet5'"):
        create_with_weights("lenet5", {})


def test_our_own_names_load_too():
    """A state dict saved by minicnn (our key names) of the same variant loads unchanged."""
    model = create("squeezenet1_1")
    state = {key: value + 1 for key, value in model.state_dict().items()}
    converted = convert_state_dict(create("squeezenet1_1"), state, "squeezenet1_1")
    assert converted.keys() == state.keys()


# ----------------------------------------------------------------------------- files
def test_npz_files_load(resnet18_state, tmp_path):
    path = tmp_path / "resnet18.npz"
    np.savez(path, **resnet18_state)
    model = create_with_weights("resnet18", path)
    assert np.array_equal(model.stem.conv1.weight.data, resnet18_state["conv1.weight"])
    assert np.array_equal(model.layer2[0].shortcut[1].running_var,
                          resnet18_state["layer2.0.downsample.1.running_var"])


def test_unknown_and_absent_files_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"weights file .*nowhere\.pth does not exist"):
        read_state_dict(tmp_path / "nowhere.pth")
    odd = tmp_path / "weights.bin"
    odd.write_bytes(b"\0" * 16)
    with pytest.raises(ValueError, match=r"weights\.bin: expected a \.pth, \.pt, \.safetensors "
                                         r"or \.npz file, got '\.bin'"):
        read_state_dict(odd)


def test_pth_files_go_through_minicnn_io(tmp_path):
    """``.pth`` reading belongs to minicnn.io: a truncated zip is its one clear error."""
    from minicnn.io import FormatError
    path = tmp_path / "resnet18.pth"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(FormatError, match=r"resnet18\.pth"):
        read_state_dict(path)