"""minicnn.summary: the per-layer cost table.

The AlexNet and VGG-16 totals are checked against numbers computed here, independently,
from the papers' layer tables — not from the summary's own code.
"""
import csv
import io
from collections import OrderedDict

import numpy as np
import pytest

import architectures
from minicnn import nn
from minicnn import functional as F
from minicnn.summary import CATEGORIES, summary
from minicnn.tensor import Function

B = 128


def zoo(name, **options):
    if name not in architectures.available():
        pytest.skip(f"architecture {name!r} is not registered")
    nn.init.manual_seed(0)
    return architectures.create(name, **options)


def conv_flops(table, batch):
    """Σ H_out·W_out·C_out · K·K·C_in/groups · 2 · B over the (C_in, C_out, K, groups,
    H_out) rows of a paper's table."""
    return sum(h * h * c_out * k * k * (c_in // g) * 2 * batch for c_in, c_out, k, g, h in table)


def conv_params(table):
    return sum((k * k * c_in // g + 1) * c_out for c_in, c_out, k, g, _ in table)


# AlexNet, Krizhevsky et al. 2012, Fig. 2, at 227×227, two towers (groups=2 on conv2, 4, 5)
ALEXNET_CONVS = [(3, 96, 11, 1, 55), (96, 256, 5, 2, 27), (256, 384, 3, 1, 13),
                 (384, 384, 3, 2, 13), (384, 256, 3, 2, 13)]
ALEXNET_FCS = [(256 * 6 * 6, 4096), (4096, 4096), (4096, 1000)]
# three 3×3/2 max-pools: (channels, output side)
ALEXNET_POOLS = [(96, 27), (256, 13), (256, 6)]

# VGG-16 (configuration D), Simonyan & Zisserman 2015, Table 1, at 224×224
VGG16_CONVS = ([(3, 64, 3, 1, 224), (64, 64, 3, 1, 224), (64, 128, 3, 1, 112),
                (128, 128, 3, 1, 112), (128, 256, 3, 1, 56)] + [(256, 256, 3, 1, 56)] * 2
               + [(256, 512, 3, 1, 28)] + [(512, 512, 3, 1, 28)] * 2 + [(512, 512, 3, 1, 14)] * 3)
VGG16_FCS = [(512 * 7 * 7, 4096), (4096, 4096), (4096, 1000)]
VGG16_POOLS = [(64, 112), (128, 56), (256, 28), (512, 14), (512, 7)]   # 2×2/2 max-pools


@pytest.fixture(scope="module")
def alexnet_report():
    return summary(zoo("alexnet"), 227, batch_size=B, format="dict")


@pytest.fixture(scope="module")
def vgg16_report():
    return summary(zoo("vgg16"), 224, batch_size=B, format="dict")


def test_alexnet_totals_match_the_paper_table(alexnet_report):
    total = alexnet_report["total"]
    fc_params = sum(i * o + o for i, o in ALEXNET_FCS)
    assert total["params"] == conv_params(ALEXNET_CONVS) + fc_params == 60_965_224
    by = total["flops_by_category"]
    assert by["conv"] == conv_flops(ALEXNET_CONVS, B)
    assert by["linear"] == sum(2 * i * o * B for i, o in ALEXNET_FCS)
    max_pools = sum(c * h * h * 3 * 3 * B for c, h in ALEXNET_POOLS)
    # the zoo's AlexNet keeps torchvision's AdaptiveAvgPool2d(6), a 1×1-window pool at 227
    adaptive = sum(r["flops_by_category"]["pool"] for r in alexnet_report["rows"]
                   if r["type"] == "AdaptiveAvgPool2d")
    assert adaptive in (0, 256 * 6 * 6 * B)
    assert by["pool"] == max_pools + adaptive
    assert total["flops"] == by["conv"] + by["linear"] + by["pool"]


def test_alexnet_layer_shapes_and_receptive_fields(alexnet_report):
    rows = {r["name"].split(".")[-1]: r for r in alexnet_report["rows"]}
    names = ["conv1", "conv2", "conv3", "conv4", "conv5"]
    for (c_in, c_out, k, g, h), name in zip(ALEXNET_CONVS, names):
        row = rows[name]
        assert row["output_shape"] == (c_out, h, h)
        assert row["activations"] == c_out * h * h
        assert row["kernel"] == (k, k) and row["groups"] == g
        assert row["params"] == (k * k * c_in // g + 1) * c_out
    # r_out = r_in + (k − 1)·j_in, j_out = j_in·s, by hand along the stack
    expected = {"conv1": (11, 4), "pool1": (19, 8), "conv2": (51, 8), "pool2": (67, 16),
                "conv3": (99, 16), "conv4": (131, 16), "conv5": (163, 16), "pool5": (195, 32)}
    for name, (field, jump) in expected.items():
        assert rows[name]["receptive_field"] == (field, field), name
        assert rows[name]["jump"] == (jump, jump), name
    assert rows["fc6"]["receptive_field"] == "all"


def test_vgg16_totals_match_the_paper_table(vgg16_report):
    total = vgg16_report["total"]
    fc_params = sum(i * o + o for i, o in VGG16_FCS)
    assert total["params"] == conv_params(VGG16_CONVS) + fc_params == 138_357_544
    by = total["flops_by_category"]
    assert by["conv"] == conv_flops(VGG16_CONVS, B)
    assert by["conv"] == 128 * 2 * 15_346_630_656   # the well-known 15.35 G multiply-adds per image
    assert by["linear"] == sum(2 * i * o * B for i, o in VGG16_FCS)
    max_pools = sum(c * h * h * 2 * 2 * B for c, h in VGG16_POOLS)
    assert by["pool"] - max_pools in (0, 512 * 7 * 7 * B)   # an identity AdaptiveAvgPool2d(7)
    assert total["flops"] == by["conv"] + by["linear"] + by["pool"]


def test_vgg16_receptive_fields_show_the_small_filter_argument(vgg16_report):
    convs = [r for r in vgg16_report["rows"] if r["type"] == "Conv2d"]
    fields = [r["receptive_field"][0] for r in convs]
    # two stacked 3×3 see 5×5, three (block 3 after pool2's jump of 4) add 8 each
    assert fields[:2] == [3, 5]
    assert fields[4:7] == [24, 32, 40]
    pools = [r for r in vgg16_report["rows"] if r["type"] == "MaxPool2d"]
    assert [p["receptive_field"][0] for p in pools] == [6, 16, 44, 100, 212]
    assert [p["jump"][0] for p in pools] == [2, 4, 8, 16, 32]


def test_memory_rule_of_thumb(vgg16_report):
    rows, total = vgg16_report["rows"], vgg16_report["total"]
    for row in rows:
        stored = 0 if row["type"] in ("Flatten", "Identity") else row["activations"]
        assert row["activation_bytes"] == 2 * B * stored * 4
        assert row["param_bytes"] == 3 * row["params"] * 4
    assert total["activation_bytes"] == sum(r["activation_bytes"] for r in rows)
    assert vgg16_report["memory_estimate_bytes"] == (total["activation_bytes"]
                                                     + 3 * 138_357_544 * 4)


def test_googlenet_table_is_complete():
    model = zoo("googlenet")
    report = summary(model, 224, batch_size=B, format="dict")
    rows, total = report["rows"], report["total"]
    assert total["params"] == sum(r["params"] for r in rows)
    # the auxiliary classifiers do not run in eval mode: their parameters are reported apart
    assert total["params"] + report["unused_params"] == model.num_parameters(trainable_only=False)
    assert total["flops"] == sum(r["flops"] for r in rows)
    assert total["output_shape"] == (1000,)
    convs = [r for r in rows if r["type"] == "Conv2d"]
    assert total["flops_by_category"]["conv"] == sum(
        r["activations"] * r["kernel"][0] * r["kernel"][1] * (r["in_channels"] // r["groups"])
        * 2 * B for r in convs)
    text = summary(model, 224, batch_size=B)
    totals = [line for line in text.splitlines() if line.startswith("total ")]
    assert len(totals) == 1 and f"{total['flops']:,}" in totals[0]


def test_lenet_1998_custom_layers_report_their_flops():
    """Subsampling, the partial C3 and the RBF output are custom layers: they count their
    own FLOPs (count_flops), C3 only over its 60 connected kernels as in the paper."""
    report = summary(zoo("lenet5_lecun98", num_classes=10, in_channels=1), 32, batch_size=1,
                     format="dict", count="all")
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["S2"]["flops"] == 6 * 14 * 14 * (4 + 1 + 1)        # window sums, scale, bias
    assert rows["C3"]["flops"] == 2 * 60 * 25 * 10 * 10 + 16 * 10 * 10
    assert rows["output"]["flops"] == 2 * 84 * 10 + 2 * 84
    assert report["total"]["flops_by_category"]["other"] == 2 * 84


# ----------------------------------------------------------------- small hand-built nets

class TwoBranch(nn.Module):
    """Inception-like: a 3×3 and a 5×5 branch concatenated, then a residual addition."""

    def __init__(self):
        super().__init__()
        self.small = nn.Conv2d(4, 4, 3, padding=1)
        self.large = nn.Conv2d(4, 4, 5, padding=2)
        self.mix = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.mix(F.concat([self.small(x), self.large(x)], axis=1))
        return x + y


def tiny_net():
    nn.init.manual_seed(0)
    return nn.Sequential(OrderedDict(
        stem=nn.Conv2d(3, 4, 3, stride=2, padding=1), act=nn.ReLU(), block=TwoBranch(),
        pool=nn.MaxPool2d(2), head=nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 5))))


def test_branches_take_the_largest_receptive_field_and_additions_are_counted():
    report = summary(tiny_net(), 16, batch_size=3, format="dict")
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["stem"]["receptive_field"] == (3, 3) and rows["stem"]["jump"] == (2, 2)
    assert rows["block.small"]["receptive_field"] == (7, 7)      # 3 + 2·2
    assert rows["block.large"]["receptive_field"] == (11, 11)    # 3 + 4·2
    assert rows["block.mix"]["receptive_field"] == (11, 11)      # max over the concat
    assert rows["pool"]["receptive_field"] == (13, 13)           # 11 + 1·2, after the add
    assert rows["head.1"]["receptive_field"] == "all"
    # the residual addition is no row, but its 4·8·8 additions per sample are in 'add'
    assert "add" not in [r["type"] for r in report["rows"]]
    assert report["total"]["flops_by_category"]["add"] == 4 * 8 * 8 * 3
    # Linear's own bias addition is not a residual addition
    assert report["total"]["flops_by_category"]["bias"] == 3 * (4 * 8 * 8 * 3 + 4 * 8 * 8 + 5)


def test_depth_collapses_blocks_into_subtotal_rows():
    model = tiny_net()
    full = summary(model, 16, batch_size=2, format="dict")
    top = summary(model, 16, batch_size=2, format="dict", depth=1)
    names = [r["name"] for r in top["rows"]]
    assert names == ["input", "stem", "act", "block", "pool", "head"]
    block = top["rows"][3]
    parts = [r for r in full["rows"] if r["name"].startswith("block.")]
    assert block["type"] == "TwoBranch" and block["layers"] == 3
    assert block["params"] == sum(r["params"] for r in parts)
    assert block["flops_by_category"] == {c: sum(r["flops_by_category"][c] for r in parts)
                                          for c in CATEGORIES}
    assert block["output_shape"] == (4, 8, 8)
    assert block["receptive_field"] == (11, 11)
    assert top["total"] == full["total"]


def test_flops_scale_with_batch_and_nothing_runs_at_the_requested_batch():
    model = tiny_net()
    seen = []
    model.stem.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].shape[0]))
    one = summary(model, 16, batch_size=1, format="dict", count="all")
    many = summary(model, 16, batch_size=1000, format="dict", count="all")
    assert seen == [1, 1]
    assert many["total"]["flops"] == 1000 * one["total"]["flops"]
    for a, b in zip(one["rows"], many["rows"]):
        assert b["flops_by_category"] == {c: 1000 * v for c, v in a["flops_by_category"].items()}


def test_count_selects_categories():
    model = tiny_net()
    only_conv = summary(model, 16, format="dict", count=("conv",))
    assert only_conv["total"]["flops"] == only_conv["total"]["flops_by_category"]["conv"]
    everything = summary(model, 16, format="dict", count="all")
    assert everything["total"]["flops"] == sum(everything["total"]["flops_by_category"].values())
    assert set(only_conv["uncounted_flops"]) == set(CATEGORIES) - {"conv"}


def test_other_layers_flop_rules():
    nn.init.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 6, 3, groups=2, bias=False), nn.BatchNorm2d(6),
                          nn.ReLU6(), nn.AvgPool2d(3, stride=1, padding=1),
                          nn.AdaptiveAvgPool2d((2, 3)), nn.Flatten(), nn.Linear(36, 4))
    rows = summary(model, (2, 9, 9), batch_size=2, format="dict")["rows"]
    conv, bn, act, avg, adaptive, flat, linear = rows[1:]
    assert conv["flops_by_category"]["conv"] == 6 * 7 * 7 * (3 * 3 * 1) * 2 * 2
    assert conv["flops_by_category"]["bias"] == 0 and conv["params"] == 6 * 9
    assert bn["flops_by_category"]["norm"] == 2 * 6 * 49 * 2 and bn["params"] == 12
    assert act["flops_by_category"]["act"] == 6 * 49 * 2
    assert avg["flops_by_category"]["pool"] == 6 * 49 * 9 * 2
    # 7 rows → windows [0,4) [3,7): 4+4; 7 columns → [0,3) [2,5) [4,7): 3·3
    # → 8·9 window elements per channel
    assert adaptive["flops_by_category"]["pool"] == 6 * 8 * 9 * 2
    assert flat["activation_bytes"] == 0
    assert linear["flops_by_category"]["linear"] == 2 * 36 * 4 * 2


def test_custom_layer_reports_its_own_cost():
    class Doubler(nn.Module):
        def forward(self, x):
            return x * 2.0

        def count_flops(self, input_shape, output_shape):
            return int(np.prod(output_shape[1:]))

    model = nn.Sequential(nn.Conv2d(1, 2, 3), Doubler())
    report = summary(model, 6, format="dict")
    assert report["rows"][-1]["flops_by_category"]["other"] == 2 * 4 * 4


# ------------------------------------------------------------------------------ formats

def test_text_markdown_csv_and_dict_agree():
    model = tiny_net()
    report = summary(model, 16, batch_size=4, format="dict")
    text = summary(model, 16, batch_size=4)
    markdown = summary(model, 16, batch_size=4, format="markdown")
    table = list(csv.DictReader(io.StringIO(summary(model, 16, batch_size=4, format="csv"))))
    n = len(report["rows"])
    assert len(table) == n + 1 and table[-1]["name"] == "total"
    for row, line in zip(report["rows"] + [report["total"]], table):
        assert int(line["params"]) == row["params"]
        assert int(line["flops"]) == row["flops"]
        assert int(line["activation_bytes"]) == row["activation_bytes"]
    assert f"{report['total']['flops']:,}" in text
    assert f"{report['total']['params']:,}" in markdown
    body = [l for l in markdown.splitlines() if l.startswith("|")]
    assert len(body) == n + 3                       # header, rule, rows, total
    for name in ("block.large", "Residual additions", "rule of thumb"):
        assert name in text and name in markdown


def test_measure_reports_a_real_peak_next_to_the_estimate():
    model = architectures.create("lenet5", num_classes=10, in_channels=1)
    before = [p.data.copy() for p in model.parameters()]
    report = summary(model, 28, batch_size=1024, format="dict", measure=True,
                     measure_batch_size=32)
    measured = report["measured"]
    assert measured["batch_size"] == 32
    input_bytes = 32 * 28 * 28 * 4
    assert measured["step_peak_bytes"] >= input_bytes
    assert measured["peak_bytes"] == measured["resident_bytes"] + measured["step_peak_bytes"]
    assert measured["estimate_bytes"] == 2 * 32 * report["total"]["activations"] * 4 \
        + 3 * 44_426 * 4
    # the rule of thumb is a rule of thumb: the same order of magnitude
    assert 0.1 < measured["peak_bytes"] / measured["estimate_bytes"] < 20
    assert all(np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))
    text = summary(model, 28, batch_size=32, measure=True)
    assert "Measured training step at batch 32" in text


def test_model_state_is_restored():
    model = tiny_net()
    model.train()
    model.block.eval()
    summary(model, 16)
    assert model.training and model.stem.training and not model.block.training
    assert Function.__call__ is not None and "traced" not in Function.__call__.__name__
    assert "traced" not in nn.Module.__call__.__name__
    assert all(not m._forward_hooks for m in model.modules())

    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        summary(nn.Sequential(nn.Conv2d(1, 1, 1), Broken()), 4)
    assert "traced" not in Function.__call__.__name__
    assert "traced" not in nn.Module.__call__.__name__


@pytest.mark.parametrize("kwargs, message", [
    (dict(input_size=(1, 2, 3, 4)), "input_size"),
    (dict(input_size="big"), "input_size"),
    (dict(input_size=0), "positive"),
    (dict(input_size=16, batch_size=0), "batch_size"),
    (dict(input_size=16, format="html"), "format"),
    (dict(input_size=16, depth=0), "depth"),
    (dict(input_size=16, count=("conv", "magic")), "magic"),
    (dict(input_size=(4, 16, 16), in_channels=3), "channels"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message) as error:
        summary(tiny_net(), **kwargs)
    assert "summary" in str(error.value)


def test_channels_are_inferred_or_required():
    assert summary(tiny_net(), 16, format="dict")["input_shape"] == (3, 16, 16)
    mlp = nn.Sequential(nn.Linear(8, 3))
    assert summary(mlp, (8,), format="dict")["total"]["params"] == 27
    with pytest.raises(ValueError, match="in_channels"):
        summary(mlp, 8)


def test_minicnn_summary_is_callable_whatever_was_imported_first():
    import minicnn
    import minicnn.summary          # binds the name minicnn.summary to the module
    text = minicnn.summary(tiny_net(), 16)
    assert text.startswith("Sequential: input 3×16×16, batch 1")
