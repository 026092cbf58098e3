"""minicnn.onnx.load against third parties: graphs and expected outputs that the onnx
package ships (written by Caffe2 and PyTorch exporters, not by us), and onnxruntime.

* The model-zoo graphs in onnx/backend/test/data/light/ keep their weights as
  ``ConstantOfShape`` nodes (one constant per tensor). Their shipped outputs are too weak a
  check, so each graph gets seeded random weights as initializers and is compared with
  onnxruntime running the very same file.
* The pytorch-converted and pytorch-operator cases that are 2-D CNN operations are checked
  against their shipped test_data_set_0 outputs.
"""
import glob
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import numpy_helper  # noqa: E402

from minicnn import nn  # noqa: E402
from minicnn.onnx import OnnxLoadError, export, load  # noqa: E402
from minicnn.tensor import no_grad  # noqa: E402

DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


def relative_error(ours, theirs):
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def run_onnxruntime(path, feeds):
    options = ort.SessionOptions()
    options.log_severity_level = 3          # the zoo files carry unused inputs: no warnings
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


# ============================================================================ model zoo

def with_random_weights(proto, seed=0):
    """The graph with each ConstantOfShape weight replaced by a seeded random initializer
    (variances of batch norm positive), its final Softmax removed (a saturated softmax
    would hide differences in the logits) and the now unused shape tensors dropped."""
    rng = np.random.default_rng(seed)
    graph = proto.graph
    initializers = {i.name: i for i in graph.initializer}
    variances = {n.input[4] for n in graph.node if n.op_type == "BatchNormalization"}
    kept = []
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in initializers:
            shape = tuple(numpy_helper.to_array(initializers[node.input[0]]))
            if node.output[0] in variances:
                weights = rng.uniform(0.5, 1.5, shape)
            else:
                fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
                weights = rng.standard_normal(shape) / np.sqrt(fan_in)
            graph.initializer.append(numpy_helper.from_array(weights.astype(np.float32),
                                                             node.output[0]))
        else:
            kept.append(node)
    if kept[-1].op_type == "Softmax":
        logits = kept.pop().input[0]
        output = graph.output[0]
        output.name = logits
        output.type.tensor_type.ClearField("shape")
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in graph.node for name in node.input}
    initializers = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    weights = {i.name for i in initializers}
    inputs = [i for i in graph.input if i.name in used and i.name not in weights]
    del graph.input[:]
    graph.input.extend(inputs)
    return proto


# The three quickest in the default suite (a few seconds each); the rest are slow.
ZOO_GRAPHS = [
    "squeezenet", "inception_v1", "shufflenet",
    pytest.param("resnet50", marks=pytest.mark.slow),
    pytest.param("densenet121", marks=pytest.mark.slow),
    pytest.param("inception_v2", marks=pytest.mark.slow),
    pytest.param("bvlc_alexnet", marks=pytest.mark.slow),
    pytest.param("zfnet512", marks=pytest.mark.slow),
    pytest.param("vgg19", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name", ZOO_GRAPHS)
def test_model_zoo_graph_with_random_weights_matches_onnxruntime(name, tmp_path):
    proto = with_random_weights(onnx.load(os.path.join(DATA, "light", f"light_{name}.onnx")))
    path = tmp_path / f"{name}.onnx"
    onnx.save(proto, str(path))
    input_name = proto.graph.input[0].name
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    (theirs,) = run_onnxruntime(path, {input_name: x})

    model = load(path)
    with no_grad():
        ours = model(x).numpy()
    assert ours.shape == theirs.shape
    error = relative_error(ours, theirs)
    print(f"\n{name:14s} relative error against onnxruntime {error:.2e}, "
          f"{model.num_parameters():,} parameters")
    assert error <= 1e-4
    # every weight of the file is a trainable Parameter of the loaded network
    weights = sum(int(np.prod(i.dims)) for i in proto.graph.initializer
                  if i.data_type == onnx.TensorProto.FLOAT)
    statistics = sum(int(np.prod(i.dims)) for i in proto.graph.initializer
                     if any(i.name in n.input[3:5] for n in proto.graph.node
                            if n.op_type == "BatchNormalization"))
    assert model.num_parameters() == weights - statistics


def test_loaded_zoo_graph_is_made_of_minicnn_layers_and_trains(tmp_path):
    proto = with_random_weights(onnx.load(os.path.join(DATA, "light", "light_squeezenet.onnx")))
    path = tmp_path / "squeezenet.onnx"
    onnx.save(proto, str(path))
    model = load(path)
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convolutions) == 26
    model.train()
    x = np.random.default_rng(2).standard_normal((1, 3, 96, 96)).astype(np.float32)
    loss = model(x).sum()
    loss.backward()
    assert all(p.grad is not None and np.isfinite(p.grad).all() for p in model.parameters())


def test_loaded_zoo_graph_exports_again(tmp_path):
    """Loaded graphs are minicnn layers and operations, so they export like any network
    (a fine-tuned import can go back out). SqueezeNet: the other zoo graphs reshape to a
    batch of exactly 1, which the export's trace at batch 2 cannot run."""
    proto = with_random_weights(onnx.load(os.path.join(DATA, "light", "light_squeezenet.onnx")))
    source = tmp_path / "source.onnx"
    onnx.save(proto, str(source))
    model = load(source)
    exported = tmp_path / "exported.onnx"
    export(model, exported, (3, 224, 224))
    x = np.random.default_rng(5).standard_normal((1, 3, 224, 224)).astype(np.float32)
    (theirs,) = run_onnxruntime(exported, {"input": x})
    with no_grad():
        ours = model(x).numpy()
    assert relative_error(ours, theirs) <= 1e-4


# ============================================================================ PyTorch's cases

CONVERTED = [
    "test_AvgPool2d", "test_AvgPool2d_stride", "test_BatchNorm1d_3d_input_eval",
    "test_BatchNorm2d_eval", "test_BatchNorm2d_momentum_eval", "test_ConstantPad2d",
    "test_ZeroPad2d", "test_Conv2d", "test_Conv2d_depthwise", "test_Conv2d_depthwise_padded",
    "test_Conv2d_depthwise_strided", "test_Conv2d_depthwise_with_multiplier",
    "test_Conv2d_dilated", "test_Conv2d_groups", "test_Conv2d_groups_thnn",
    "test_Conv2d_no_bias", "test_Conv2d_padding", "test_Conv2d_strided", "test_MaxPool2d",
    "test_MaxPool2d_stride_padding_dilation", "test_ReLU", "test_LeakyReLU",
    "test_LeakyReLU_with_negval", "test_PReLU_2d", "test_PReLU_2d_multiparam", "test_ELU",
    "test_SELU", "test_Sigmoid", "test_Tanh", "test_Linear", "test_Linear_no_bias",
    "test_Softmax", "test_Softmin", "test_LogSoftmax", "test_softmax_functional_dim3",
    "test_softmax_lastdim", "test_log_softmax_dim3", "test_log_softmax_lastdim",
    "test_PixelShuffle", "test_GLU",
]
OPERATORS = [
    "test_operator_conv", "test_operator_flatten", "test_operator_view",
    "test_operator_addmm", "test_operator_mm", "test_operator_concat2", "test_operator_clip",
    "test_operator_exp", "test_operator_max", "test_operator_min",
    "test_operator_reduced_mean", "test_operator_reduced_mean_keepdim",
    "test_operator_reduced_sum", "test_operator_reduced_sum_keepdim",
    "test_operator_add_broadcast", "test_operator_add_size1_broadcast",
    "test_operator_permute2", "test_operator_chunk", "test_operator_params",
]
CASES = ([os.path.join("pytorch-converted", c) for c in CONVERTED]
         + [os.path.join("pytorch-operator", c) for c in OPERATORS])


def read_tensors(folder, kind):
    return [numpy_helper.to_array(onnx.load_tensor(f))
            for f in sorted(glob.glob(os.path.join(folder, f"{kind}_*.pb")))]


@pytest.mark.parametrize("case", CASES, ids=os.path.basename)
def test_pytorch_case_matches_its_shipped_outputs(case):
    folder = os.path.join(DATA, case)
    model = load(os.path.join(folder, "model.onnx"))
    inputs = read_tensors(os.path.join(folder, "test_data_set_0"), "input")
    expected = read_tensors(os.path.join(folder, "test_data_set_0"), "output")
    with no_grad():
        outputs = model(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    assert len(outputs) == len(expected)
    for ours, theirs in zip(outputs, expected):
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-4,
                                   atol=1e-5 * max(1.0, float(np.abs(theirs).max())))


# ============================================================================ ops and auto_pad

def tiny_model(node, inputs, output, initializers=(), opset=17):
    graph = onnx.helper.make_graph([node], "tiny", inputs, [output], list(initializers))
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])


def value(name, shape):
    return onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)


@pytest.mark.parametrize("op_type, auto_pad, kernel, stride", [
    ("MaxPool", "SAME_UPPER", 3, 2), ("MaxPool", "SAME_LOWER", 2, 2),
    ("AveragePool", "SAME_UPPER", 3, 2), ("AveragePool", "SAME_LOWER", 4, 3),
    ("Conv", "SAME_UPPER", 3, 2), ("Conv", "SAME_LOWER", 4, 1), ("Conv", "VALID", 3, 2),
])
def test_auto_pad_matches_onnxruntime(op_type, auto_pad, kernel, stride, tmp_path):
    rng = np.random.default_rng(3)
    inputs, initializers = ["x"], []
    if op_type == "Conv":
        weight = rng.standard_normal((4, 3, kernel, kernel)).astype(np.float32)
        initializers.append(numpy_helper.from_array(weight, "w"))
        inputs.append("w")
    node = onnx.helper.make_node(op_type, inputs, ["y"], kernel_shape=[kernel, kernel],
                                 strides=[stride, stride], auto_pad=auto_pad)
    proto = tiny_model(node, [value("x", [2, 3, 9, 10])], value("y", None), initializers)
    path = tmp_path / "tiny.onnx"
    onnx.save(proto, str(path))
    x = rng.standard_normal((2, 3, 9, 10)).astype(np.float32)
    (theirs,) = run_onnxruntime(path, {"x": x})
    with no_grad():
        ours = load(path)(x).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pads, include_pad", [
    ([0, 1, 2, 0], 0), ([0, 1, 2, 0], 1), ([2, 2, 2, 2], 0), ([1, 0, 1, 0], 0)])
def test_average_pool_with_uneven_or_wide_padding_matches_onnxruntime(pads, include_pad,
                                                                       tmp_path):
    node = onnx.helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3],
                                 strides=[2, 2], pads=pads, count_include_pad=include_pad)
    proto = tiny_model(node, [value("x", [1, 2, 7, 8])], value("y", None))
    path = tmp_path / "pool.onnx"
    onnx.save(proto, str(path))
    x = np.random.default_rng(4).standard_normal((1, 2, 7, 8)).astype(np.float32)
    (theirs,) = run_onnxruntime(path, {"x": x})
    with no_grad():
        ours = load(path)(x).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_shape_gather_concat_chain_computes_the_flatten_size(tmp_path):
    """What PyTorch writes for x.view(x.size(0), -1): the batch size read from the graph."""
    h = onnx.helper

    def integers(name, dims, values):
        return h.make_tensor(name, onnx.TensorProto.INT64, dims, values)
    nodes = [
        h.make_node("Shape", ["x"], ["shape"]),
        h.make_node("Constant", [], ["zero"], value=integers("zero", [], [0])),
        h.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        h.make_node("Unsqueeze", ["batch", "axes"], ["batch_1d"]),
        h.make_node("Constant", [], ["minus_one"], value=integers("minus_one", [1], [-1])),
        h.make_node("Concat", ["batch_1d", "minus_one"], ["target"], axis=0),
        h.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    axes = numpy_helper.from_array(np.array([0], dtype=np.int64), "axes")
    graph = h.make_graph(nodes, "flatten", [value("x", ["n", 2, 3, 4])], [value("y", None)],
                         [axes])
    path = tmp_path / "flatten.onnx"
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), str(path))
    model = load(path)
    for batch in (1, 5):
        x = np.arange(batch * 24, dtype=np.float32).reshape(batch, 2, 3, 4)
        with no_grad():
            assert model(x).numpy().tolist() == x.reshape(batch, -1).tolist()


# ============================================================================ bad input

def saved_squeezenet(tmp_path):
    path = tmp_path / "squeezenet.onnx"
    proto = with_random_weights(onnx.load(os.path.join(DATA, "light", "light_squeezenet.onnx")))
    onnx.save(proto, str(path))
    return path, proto


def test_truncated_file_gets_one_clear_error_naming_it(tmp_path):
    path, _ = saved_squeezenet(tmp_path)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(OnnxLoadError, match=r"truncated\.onnx: not an ONNX model"):
        load(truncated)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 a zip, not a protobuf",
                                     b"\x08\x07" + bytes(range(256)) * 4])
def test_other_formats_are_refused_naming_the_file(content, tmp_path):
    path = tmp_path / "weights.onnx"
    path.write_bytes(content)
    with pytest.raises(OnnxLoadError, match=r"weights\.onnx: not an ONNX model"):
        load(path)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(OnnxLoadError, match=r"nowhere\.onnx: cannot read the file"):
        load(tmp_path / "nowhere.onnx")


def test_missing_initializer_is_named_with_the_file(tmp_path):
    _, proto = saved_squeezenet(tmp_path)
    missing = proto.graph.initializer[3].name
    del proto.graph.initializer[3]
    path = tmp_path / "broken.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(OnnxLoadError, match=rf"broken\.onnx: node .* reads '{missing}', which "
                                            r"no initializer, graph input or earlier node"):
        load(path)


def test_unsupported_op_names_the_op_the_node_and_the_opset(tmp_path):
    node = onnx.helper.make_node("Softplus", ["x"], ["y"], name="smooth_relu")
    path = tmp_path / "softplus.onnx"
    onnx.save(tiny_model(node, [value("x", [1, 3])], value("y", [1, 3]), opset=13), str(path))
    with pytest.raises(OnnxLoadError, match=r"softplus\.onnx: node 'smooth_relu' uses op "
                                            r"'Softplus' \(opset 13\)"):
        load(path)


def test_three_dimensional_convolution_is_refused_clearly():
    path = os.path.join(DATA, "pytorch-converted", "test_Conv3d", "model.onnx")
    with pytest.raises(OnnxLoadError, match=r"test_Conv3d.*Conv, opset 6\): 3-D window"):
        load(path)
