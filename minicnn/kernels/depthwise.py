"""Depthwise convolution: each input channel convolved with its own filters.

With ``groups == C`` a convolution mixes no channels: output channel o = c·mult + t reads
only input channel c (``mult`` is the channel multiplier, usually 1). im2col would copy
KH·KW values per output just to multiply each by one weight, so a direct loop is both
faster and needs no column buffer (MobileNet's depthwise 3×3 is ~9× less memory traffic).

Notation as in im2col.py; weights are laid out channels-last too, w[i, j, o] (KH, KW, C·mult),
so the innermost loop runs along contiguous channels in x, w and y.

    y[n, oh, ow, c·mult + t] = Σ_{i,j} x[n, oh·SH − PH + i·DH, ow·SW − PW + j·DW, c] · w[i, j, c·mult + t]

Backward:
    gx[n, ih, iw, c]     = Σ_{oh,ow,i,j,t : window covers (ih, iw)} gy[n, oh, ow, c·mult+t] · w[i, j, c·mult+t]
    gw[i, j, c·mult + t] = Σ_{n,oh,ow} gy[n, oh, ow, c·mult+t] · x[n, ih, iw, c]
"""
import numpy as np
from numba import njit, prange

from minicnn.backend import get_array_module
from minicnn.kernels import _gpu


# ----------------------------------------------------------------------------- reference

def forward_reference(x, w, geometry, mult):
    """Plain NumPy: one multiply-add of a strided slice per kernel tap."""
    g = geometry
    padded = np.pad(x, ((0, 0), (g.PH, g.PH), (g.PW, g.PW), (0, 0)))
    padded = np.repeat(padded, mult, axis=3)          # input channel c feeds c·mult + t
    y = np.zeros((g.N, g.OH, g.OW, g.C * mult), dtype=x.dtype)
    for i in range(g.KH):
        for j in range(g.KW):
            window = padded[:, i * g.DH:i * g.DH + g.SH * (g.OH - 1) + 1:g.SH,
                            j * g.DW:j * g.DW + g.SW * (g.OW - 1) + 1:g.SW, :]
            y += window * w[i, j]
    return y


def backward_input_reference(gy, w, geometry, mult):
    g = geometry
    padded = np.zeros((g.N, g.H + 2 * g.PH, g.W + 2 * g.PW, g.C * mult), dtype=gy.dtype)
    for i in range(g.KH):
        for j in range(g.KW):
            padded[:, i * g.DH:i * g.DH + g.SH * (g.OH - 1) + 1:g.SH,
                   j * g.DW:j * g.DW + g.SW * (g.OW - 1) + 1:g.SW, :] += gy * w[i, j]
    gx = padded[:, g.PH:g.PH + g.H, g.PW:g.PW + g.W, :]
    return gx.reshape(g.N, g.H, g.W, g.C, mult).sum(axis=4)


def backward_weight_reference(gy, x, geometry, mult):
    g = geometry
    padded = np.repeat(np.pad(x, ((0, 0), (g.PH, g.PH), (g.PW, g.PW), (0, 0))), mult, axis=3)
    gw = np.empty((g.KH, g.KW, g.C * mult), dtype=x.dtype)
    for i in range(g.KH):
        for j in range(g.KW):
            window = padded[:, i * g.DH:i * g.DH + g.SH * (g.OH - 1) + 1:g.SH,
                            j * g.DW:j * g.DW + g.SW * (g.OW - 1) + 1:g.SW, :]
            gw[i, j] = (window * gy).sum(axis=(0, 1, 2))
    return gw


# ----------------------------------------------------------------------------- cpu (Numba)

@njit(parallel=True, cache=True)
def _forward_cpu(x, w, y, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, mult):
    N, H, W, C = x.shape
    CO = C * mult
    for row in prange(N * OH):
        n, oh = row // OH, row % OH
        for ow in range(OW):
            out = y[n, oh, ow]
            out[:] = 0
            for i in range(KH):
                ih = oh * SH - PH + i * DH
                if ih < 0 or ih >= H:
                    continue
                for j in range(KW):
                    iw = ow * SW - PW + j * DW
                    if iw < 0 or iw >= W:
                        continue
                    src = x[n, ih, iw]
                    tap = w[i, j]
                    if mult == 1:
                        for c in range(C):       # contiguous: vectorizes
                            out[c] += src[c] * tap[c]
                    else:
                        for c in range(C):
                            for t in range(mult):
                                out[c * mult + t] += src[c] * tap[c * mult + t]


@njit(parallel=True, cache=True)
def _backward_input_cpu(gy, w, gx, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, mult):
    N, H, W, C = gx.shape
    CO = C * mult
    for n in prange(N):                        # each thread owns whole samples of gx
        gx[n] = 0
        for oh in range(OH):
            for ow in range(OW):
                g = gy[n, oh, ow]
                for i in range(KH):
                    ih = oh * SH - PH + i * DH
                    if ih < 0 or ih >= H:
                        continue
                    for j in range(KW):
                        iw = ow * SW - PW + j * DW
                        if iw < 0 or iw >= W:
                            continue
                        dst = gx[n, ih, iw]
                        tap = w[i, j]
                        if mult == 1:
                            for c in range(C):
                                dst[c] += g[c] * tap[c]
                        else:
                            for c in range(C):
                                for t in range(mult):
                                    dst[c] += g[c * mult + t] * tap[c * mult + t]


@njit(parallel=True, cache=True)
def _backward_weight_cpu(gy, x, partial, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, mult):
    # partial[n] holds sample n's contribution; summing them afterwards avoids two
    # threads adding into the same gw element (a race) without any locking
    N, H, W, C = x.shape
    CO = C * mult
    for n in prange(N):
        acc = partial[n]
        acc[:] = 0
        for oh in range(OH):
            for ow in range(OW):
                g = gy[n, oh, ow]
                for i in range(KH):
                    ih = oh * SH - PH + i * DH
                    if ih < 0 or ih >= H:
                        continue
                    for j in range(KW):
                        iw = ow * SW - PW + j * DW
                        if iw < 0 or iw >= W:
                            continue
                        src = x[n, ih, iw]
                        a = acc[i, j]
                        if mult == 1:
                            for c in range(C):
                                a[c] += g[c] * src[c]
                        else:
                            for c in range(C):
                                for t in range(mult):
                                    a[c * mult + t] += g[c * mult + t] * src[c]


def _args(geometry, mult):
    g = geometry
    return (g.KH, g.KW, g.SH, g.SW, g.PH, g.PW, g.DH, g.DW, g.OH, g.OW, mult)


def forward_cpu(x, w, geometry, mult):
    y = np.empty((geometry.N, geometry.OH, geometry.OW, geometry.C * mult), dtype=x.dtype)
    _forward_cpu(x, w, y, *_args(geometry, mult))
    return y


def backward_input_cpu(gy, w, geometry, mult):
    g = geometry
    gx = np.empty((g.N, g.H, g.W, g.C), dtype=gy.dtype)
    _backward_input_cpu(gy, w, gx, *_args(g, mult))
    return gx


def backward_weight_cpu(gy, x, geometry, mult):
    g = geometry
    partial = np.empty((g.N, g.KH, g.KW, g.C * mult), dtype=x.dtype)
    _backward_weight_cpu(gy, x, partial, *_args(g, mult))
    return partial.sum(axis=0)


# ----------------------------------------------------------------------------- gpu (CuPy)

_FORWARD_CUDA = _gpu.register("depthwise_forward_nhwc", r"""
extern "C" __global__ void depthwise_forward_nhwc(
        const T* x, const T* w, T* y, int N, int H, int W, int C,
        int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW,
        int OH, int OW, int mult) {
    int CO = C * mult;
    long long total = (long long)N * OH * OW * CO;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        int o = idx % CO, ow = (idx / CO) % OW, oh = (idx / ((long long)CO * OW)) % OH;
        int n = idx / ((long long)CO * OW * OH), c = o / mult;
        T sum = 0;
        for (int i = 0; i < KH; ++i) {
            int ih = oh * SH - PH + i * DH;
            if (ih < 0 || ih >= H) continue;
            for (int j = 0; j < KW; ++j) {
                int iw = ow * SW - PW + j * DW;
                if (iw < 0 || iw >= W) continue;
                sum += x[(((long long)n * H + ih) * W + iw) * C + c] * w[(i * KW + j) * CO + o];
            }
        }
        y[idx] = sum;
    }
}
""")

_BACKWARD_INPUT_CUDA = _gpu.register("depthwise_backward_input_nhwc", r"""
extern "C" __global__ void depthwise_backward_input_nhwc(
        const T* gy, const T* w, T* gx, int N, int H, int W, int C,
        int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW,
        int OH, int OW, int mult) {
    // gather: one thread per input element sums the outputs whose windows cover it
    int CO = C * mult;
    long long total = (long long)N * H * W * C;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        int c = idx % C, iw = (idx / C) % W, ih = (idx / ((long long)C * W)) % H;
        int n = idx / ((long long)C * W * H);
        T sum = 0;
        for (int i = 0; i < KH; ++i) {
            int oh_s = ih + PH - i * DH;
            if (oh_s < 0 || oh_s % SH) continue;
            int oh = oh_s / SH;  if (oh >= OH) continue;
            for (int j = 0; j < KW; ++j) {
                int ow_s = iw + PW - j * DW;
                if (ow_s < 0 || ow_s % SW) continue;
                int ow = ow_s / SW;  if (ow >= OW) continue;
                for (int t = 0; t < mult; ++t) {
                    int o = c * mult + t;
                    sum += gy[(((long long)n * OH + oh) * OW + ow) * CO + o] * w[(i * KW + j) * CO + o];
                }
            }
        }
        gx[idx] = sum;
    }
}
""")

_BACKWARD_WEIGHT_CUDA = _gpu.register("depthwise_backward_weight_nhwc", r"""
extern "C" __global__ void depthwise_backward_weight_nhwc(
        const T* gy, const T* x, T* gw, int N, int H, int W, int C,
        int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW,
        int OH, int OW, int mult) {
    // one thread per weight element loops over the batch and the output plane
    int CO = C * mult;
    long long total = (long long)KH * KW * CO;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        int o = idx % CO, j = (idx / CO) % KW, i = idx / ((long long)CO * KW), c = o / mult;
        T sum = 0;
        for (int n = 0; n < N; ++n)
            for (int oh = 0; oh < OH; ++oh) {
                int ih = oh * SH - PH + i * DH;
                if (ih < 0 || ih >= H) continue;
                for (int ow = 0; ow < OW; ++ow) {
                    int iw = ow * SW - PW + j * DW;
                    if (iw < 0 || iw >= W) continue;
                    sum += gy[(((long long)n * OH + oh) * OW + ow) * CO + o]
                         * x[(((long long)n * H + ih) * W + iw) * C + c];
                }
            }
        gw[idx] = sum;
    }
}
""")


def _gpu_args(g, mult):
    return tuple(np.int32(v) for v in (g.N, g.H, g.W, g.C) + _args(g, mult))


def forward_gpu(x, w, geometry, mult):
    import cupy
    g = geometry
    y = cupy.empty((g.N, g.OH, g.OW, g.C * mult), dtype=x.dtype)
    _gpu.launch("depthwise_forward_nhwc", x.dtype, y.size, cupy.ascontiguousarray(x),
                cupy.ascontiguousarray(w), y, *_gpu_args(g, mult))
    return y


def backward_input_gpu(gy, w, geometry, mult):
    import cupy
    g = geometry
    gx = cupy.empty((g.N, g.H, g.W, g.C), dtype=gy.dtype)
    _gpu.launch("depthwise_backward_input_nhwc", gy.dtype, gx.size, cupy.ascontiguousarray(gy),
                cupy.ascontiguousarray(w), gx, *_gpu_args(g, mult))
    return gx


def backward_weight_gpu(gy, x, geometry, mult):
    import cupy
    g = geometry
    gw = cupy.empty((g.KH, g.KW, g.C * mult), dtype=x.dtype)
    _gpu.launch("depthwise_backward_weight_nhwc", x.dtype, gw.size, cupy.ascontiguousarray(gy),
                cupy.ascontiguousarray(x), gw, *_gpu_args(g, mult))
    return gw


# ----------------------------------------------------------------------------- dispatch

def forward(x, w, geometry, mult):
    """x (N, H, W, C), w (KH, KW, C·mult) -> y (N, OH, OW, C·mult)."""
    if get_array_module(x) is np:
        return forward_cpu(x, w, geometry, mult)
    return forward_gpu(x, w, geometry, mult)


def backward_input(gy, w, geometry, mult):
    """gy (N, OH, OW, C·mult) -> gx (N, H, W, C)."""
    if get_array_module(gy) is np:
        return backward_input_cpu(gy, w, geometry, mult)
    return backward_input_gpu(gy, w, geometry, mult)


def backward_weight(gy, x, geometry, mult):
    """gy (N, OH, OW, C·mult), x (N, H, W, C) -> gw (KH, KW, C·mult)."""
    if get_array_module(gy) is np:
        return backward_weight_cpu(gy, x, geometry, mult)
    return backward_weight_gpu(gy, x, geometry, mult)
