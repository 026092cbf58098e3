"""Per-operation speed: forward and forward+backward of representative layers, against
the BLAS limit of the same GEMM shape.

    python benchmarks/ops.py [--repeat 7] [--json out.json]

For a convolution, "GEMM" is NumPy's matmul of the exact matrix product the convolution
performs ((N·OH·OW) × (KH·KW·C/G) times (KH·KW·C/G) × (C_out/G)); the ratio conv/GEMM
says how close the whole convolution (im2col included) comes to the machine's limit for
that shape. The targets (issue "CNN operations"): a dense 3×3 forward ≥ 70 % of the GEMM
rate, and im2col < 30 % of the forward time.

Stride-1 3×3 convolutions with ≥ 32 channels take the Winograd path (kernels/winograd.py),
which does a quarter of the multiplications: their "GF/s" counts the direct method's
flops, so fwd/GEMM above 100 % is the algorithm's saving, and "im2col %" (the cost of an
im2col the path no longer runs) does not apply to them. The "path" column names the
algorithm ``choose_algorithm`` (minicnn/functional/conv.py) picked; to time another one on
the same rows, force it where it applies: ``MINICNN_CONV_ALGORITHM=im2col python
benchmarks/ops.py``.
"""
import argparse
import json
import os
import sys
import time

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from benchmarks.timing import gemm_rate, measure
from minicnn import Tensor, functional as F
from minicnn.kernels import channels_last
from minicnn.kernels.im2col import ConvGeometry, im2col


def _tensor(rng, shape, requires_grad=True):
    data = rng.standard_normal(shape).astype(np.float32)
    # conv outputs are channels-last in a network; benchmark inputs the same way
    if len(shape) == 4:
        data = np.ascontiguousarray(data.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    return Tensor(data, requires_grad=requires_grad)


def _forward_backward(make_output, leaves):
    def step():
        for leaf in leaves:
            leaf.grad = None
        y = make_output()
        y.backward(np.ones(y.shape, np.float32))
    return step


def conv_row(name, rng, x_shape, out_channels, kernel, stride=1, padding=0, groups=1, repeat=7):
    x = _tensor(rng, x_shape)
    w = _tensor(rng, (out_channels, x_shape[1] // groups, kernel, kernel))
    w.data *= 0.1
    started = time.perf_counter()
    y = F.conv2d(x, w, None, stride, padding, 1, groups)
    first_call = time.perf_counter() - started
    forward = measure(lambda: F.conv2d(x, w, None, stride, padding, 1, groups), repeat)[0]
    both = measure(_forward_backward(lambda: F.conv2d(x, w, None, stride, padding, 1, groups),
                                     [x, w]), repeat)[0]
    N, _, OH, OW = y.shape
    M, K, COg = N * OH * OW, kernel * kernel * x_shape[1] // groups, out_channels // groups
    flops = 2.0 * M * K * COg * groups
    row = dict(op=name, path=y.creator.path, shape=f"{x_shape}→{tuple(y.shape)}",
               first_call_ms=first_call * 1e3,
               forward_ms=forward * 1e3, forward_gflops=flops / forward / 1e9,
               train_ms=both * 1e3, train_gflops=3 * flops / both / 1e9)
    depthwise = groups == x_shape[1] and groups > 1
    if not depthwise:
        row["gemm_gflops"] = gemm_rate(M, K, COg) if groups == 1 else None
        if groups == 1:
            row["vs_gemm"] = row["forward_gflops"] / row["gemm_gflops"]
        if kernel > 1 and row["path"] != "winograd":
            x_nhwc = channels_last(x.data)
            g = ConvGeometry(x_nhwc.shape, (kernel, kernel), (stride,) * 2, (padding,) * 2,
                             (1, 1), groups)
            row["im2col_share"] = measure(lambda: im2col(x_nhwc, g), repeat)[0] / forward
    return row


def pool_row(name, rng, x_shape, kernel, stride, padding=0, repeat=7):
    x = _tensor(rng, x_shape)
    started = time.perf_counter()
    y = F.max_pool2d(x, kernel, stride, padding)
    first_call = time.perf_counter() - started
    forward = measure(lambda: F.max_pool2d(x, kernel, stride, padding), repeat)[0]
    both = measure(_forward_backward(lambda: F.max_pool2d(x, kernel, stride, padding), [x]),
                   repeat)[0]
    bytes_moved = x.data.nbytes + y.data.nbytes
    return dict(op=name, shape=f"{x_shape}→{tuple(y.shape)}", first_call_ms=first_call * 1e3,
                forward_ms=forward * 1e3, train_ms=both * 1e3,
                forward_gbytes_per_s=bytes_moved / forward / 1e9)


def concat_chain_row(name, rng, batch, channels, growth, layers, side, repeat=7):
    """A dense block's data movement alone: concatenate ``layers`` new maps one by one."""
    base = _tensor(rng, (batch, channels, side, side))
    new = [_tensor(rng, (batch, growth, side, side)) for _ in range(layers)]

    def chain():
        features = base
        for piece in new:
            features = F.concat([features, piece], axis=1)
        return features
    forward = measure(chain, repeat)[0]
    both = measure(_forward_backward(chain, [base] + new), repeat)[0]
    return dict(op=name, shape=f"{layers}×(+{growth}) from {(batch, channels, side, side)}",
                forward_ms=forward * 1e3, train_ms=both * 1e3)


def folding_row(name, rng, architecture, input_shape, repeat=7):
    """Inference with and without conv–BN folding (``minicnn.fold.fold_batchnorm``)."""
    import architectures
    from minicnn import no_grad
    from minicnn.fold import fold_batchnorm
    model = architectures.create(architecture, num_classes=10, in_channels=input_shape[1]).eval()
    folded = fold_batchnorm(model)
    x = _tensor(rng, input_shape, requires_grad=False)

    def infer(network):
        with no_grad():
            network(x)
    plain = measure(lambda: infer(model), repeat)[0]
    fast = measure(lambda: infer(folded), repeat)[0]
    return dict(op=name, shape=f"{input_shape} inference", forward_ms=fast * 1e3,
                unfolded_ms=plain * 1e3, folding_speedup=plain / fast)


def run(repeat=7):
    rng = np.random.default_rng(0)
    rows = [
        conv_row("LeNet conv2 5×5", rng, (128, 6, 12, 12), 16, 5, repeat=repeat),
        conv_row("ResNet-18 3×3 @32×32", rng, (64, 64, 32, 32), 64, 3, 1, 1, repeat=repeat),
        conv_row("ResNet-18 3×3 @16×16", rng, (64, 128, 16, 16), 128, 3, 1, 1, repeat=repeat),
        conv_row("ResNet-18 3×3 @56×56", rng, (16, 64, 56, 56), 64, 3, 1, 1, repeat=repeat),
        conv_row("ResNet 1×1 @28×28", rng, (16, 256, 28, 28), 128, 1, repeat=repeat),
        conv_row("ResNeXt grouped 3×3 g=32", rng, (16, 128, 28, 28), 128, 3, 1, 1, 32, repeat=repeat),
        conv_row("MobileNetV2 depthwise 3×3", rng, (32, 144, 16, 16), 144, 3, 1, 1, 144, repeat=repeat),
        pool_row("max-pool 3×3/2", rng, (16, 64, 112, 112), 3, 2, 1, repeat=repeat),
        concat_chain_row("DenseNet concat chain", rng, 16, 64, 32, 6, 16, repeat=repeat),
        folding_row("ResNet-18 CIFAR, BN folded", rng, "resnet18_cifar", (64, 3, 32, 32),
                    repeat=repeat),
    ]
    return rows


def format_table(rows):
    header = ("op", "shape", "path", "fwd ms", "fwd GF/s", "GEMM GF/s", "fwd/GEMM", "im2col %",
              "fwd+bwd ms", "fwd+bwd GF/s", "1st call ms")

    def cell(row, key, fmt):
        value = row.get(key)
        return "" if value is None else fmt.format(value)
    lines = [header]
    for r in rows:
        lines.append((r["op"], r["shape"], r.get("path", ""), cell(r, "forward_ms", "{:.2f}"),
                      cell(r, "forward_gflops", "{:.1f}"), cell(r, "gemm_gflops", "{:.1f}"),
                      cell(r, "vs_gemm", "{:.0%}"),
                      "" if r.get("im2col_share") is None else f"{100 * r['im2col_share']:.0f}",
                      cell(r, "train_ms", "{:.2f}"), cell(r, "train_gflops", "{:.1f}"),
                      cell(r, "first_call_ms", "{:.0f}")))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(str(v).ljust(w) if i < 3 else str(v).rjust(w)
                               for i, (v, w) in enumerate(zip(line, widths))) for line in lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed repetitions (median shown)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    rows = run(args.repeat)
    print(format_table(rows))
    for r in rows:
        if "folding_speedup" in r:
            print(f"\n{r['op']}: {r['unfolded_ms']:.1f} ms unfolded → {r['forward_ms']:.1f} ms "
                  f"folded ({r['folding_speedup']:.2f}× faster inference)")
    print(f"\nBLAS square sgemm 2048³: {gemm_rate(2048, 2048, 2048):.1f} GF/s "
          f"(the machine's practical limit)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
