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
from minicnn.kernels.registry import register_kernel


# ----------------------------------------------------------------------------- reference

def forward_reference(x, w, geometry, mult):
    """Plain NumPy: one multiply-add of a strided slice per kernel tap."""
    g, xp = geometry, get_array_module(x)
    padded = xp.pad(x, ((0, 0), (g.PH, g.PH), (g.PW, g.PW), (0, 0)))
    padded = xp.repeat(padded, mult, axis=3)          # input channel c feeds c·mult + t
    y = xp.zeros((g.N, g.OH, g.OW, g.C * mult), dtype=x.dtype)
    for i in range(g.KH):
        for j in range(g.KW):
            window = padded[:, i * g.DH:i * g.DH + g.SH * (g.OH - 1) + 1:g.SH,
                            j * g.DW:j * g.DW + g.SW * (g.OW - 1) + 1:g.SW, :]
            y += window * w[i, j]
    return y


def backward_input_reference(gy, w, geometry, mult):
    g, xp = geometry, get_array_module(gy)
    padded = xp.zeros((g.N, g.H + 2 * g.PH, g.W + 2 * g.PW, g.C * mult), dtype=gy.dtype)
    for i in range(g.KH):
        for j in range(g.KW):
            padded[:, i * g.DH:i * g.DH + g.SH * (g.OH - 1) + 1:g.SH,
                   j * g.DW:j * g.DW + g.SW * (g.OW - 1) + 1:g.SW, :] += gy * w[i, j]
    gx = padded[:, g.PH:g.PH + g.H, g.PW:g.PW + g.W, :]
    return gx.reshape(g.N, g.H, g.W, g.C, mult).sum(axis=4)


def backward_weight_reference(gy, x, geometry, mult):
    g, xp = geometry, get_array_module(x)
    padded = xp.repeat(xp.pad(x, ((0, 0), (g.PH, g.PH), (g.PW, g.PW), (0, 0))), mult, axis=3)
    gw = xp.empty((g.KH, g.KW, g.C * mult), dtype=x.dtype)
    for i in range(g.KH):
        for j in range(g.KW):
            window = padded[:, i * g.DH:i * g.DH + g.SH * (g.OH - 1) + 1:g.SH,
                            j * g.DW:j * g.DW + g.SW * (g.OW - 1) + 1:g.SW, :]
            gw[i, j] = (window * gy).sum(axis=(0, 1, 2))
    return gw


# ----------------------------------------------------------------------------- cpu (Numba)

@njit(parallel=True, cache=True)
def _forward_numba(x, w, y, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, mult):
    N, H, W, C = x.shape
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
def _backward_input_numba(gy, w, gx, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, mult):
    N, H, W, C = gx.shape
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
def _backward_weight_numba(gy, x, partial, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, mult):
    # partial[n] holds sample n's contribution; summing them afterwards avoids two
    # threads adding into the same gw element (a race) without any locking
    N, H, W, C = x.shape
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


def forward_numba(x, w, geometry, mult):
    y = np.empty((geometry.N, geometry.OH, geometry.OW, geometry.C * mult), dtype=x.dtype)
    _forward_numba(x, w, y, *_args(geometry, mult))
    return y


def backward_input_numba(gy, w, geometry, mult):
    g = geometry
    gx = np.empty((g.N, g.H, g.W, g.C), dtype=gy.dtype)
    _backward_input_numba(gy, w, gx, *_args(g, mult))
    return gx


def backward_weight_numba(gy, x, geometry, mult):
    g = geometry
    partial = np.empty((g.N, g.KH, g.KW, g.C * mult), dtype=x.dtype)
    _backward_weight_numba(gy, x, partial, *_args(g, mult))
    return partial.sum(axis=0)


# ----------------------------------------------------------------------------- gpu (CuPy)

_gpu.register("depthwise_forward_nhwc", r"""
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

_gpu.register("depthwise_backward_input_nhwc", r"""
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

# One block per weight element gw[i, j, o]: its threads split the N·OH·OW output positions
# among them, then add their partial sums in a tree in shared memory. (One thread per
# weight, as first written, left MobileNet-v1's first depthwise layer at batch 128 with 288
# threads, each summing 1.6 M products one after another.) The sum's order is fixed, so
# the result is the same on every run.
REDUCTION_THREADS = 256

_gpu.register("depthwise_backward_weight_nhwc", f"#define REDUCTION_THREADS {REDUCTION_THREADS}\n" + r"""
extern "C" __global__ void depthwise_backward_weight_nhwc(
        const T* gy, const T* x, T* gw, int N, int H, int W, int C,
        int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW,
        int OH, int OW, int mult) {
    __shared__ T partial[REDUCTION_THREADS];            // blockDim.x == REDUCTION_THREADS
    int CO = C * mult;
    long long weight = blockIdx.x;                      // (i, j, o) of gw (KH, KW, CO)
    int o = weight % CO, j = (weight / CO) % KW, i = weight / ((long long)CO * KW);
    int c = o / mult;
    long long positions = (long long)N * OH * OW;
    T sum = 0;
    for (long long p = threadIdx.x; p < positions; p += blockDim.x) {
        int ow = p % OW, oh = (p / OW) % OH;
        long long n = p / ((long long)OW * OH);
        int ih = oh * SH - PH + i * DH, iw = ow * SW - PW + j * DW;
        if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
        sum += gy[p * CO + o] * x[((n * H + ih) * W + iw) * C + c];
    }
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) gw[weight] = partial[0];
}
""")


def _gpu_args(g, mult):
    return tuple(np.int32(v) for v in (g.N, g.H, g.W, g.C) + _args(g, mult))


def _same_dtype(kernel, *arrays):
    """A CUDA kernel is compiled for one element type T and reads every array as T:
    refuse arrays of different types instead of reading float32 memory as double."""
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) > 1:
        raise TypeError(f"{kernel}: expected arrays of one float dtype, got "
                        f"{', '.join(str(a.dtype) for a in arrays)}; cast them first (the "
                        f"convolution casts its upstream gradient to the weight's dtype)")


def forward_cuda(x, w, geometry, mult):
    _same_dtype("depthwise forward", x, w)
    import cupy
    g = geometry
    y = cupy.empty((g.N, g.OH, g.OW, g.C * mult), dtype=x.dtype)
    _gpu.launch("depthwise_forward_nhwc", x.dtype, y.size, cupy.ascontiguousarray(x),
                cupy.ascontiguousarray(w), y, *_gpu_args(g, mult))
    return y


def backward_input_cuda(gy, w, geometry, mult):
    _same_dtype("depthwise backward_input", gy, w)
    import cupy
    g = geometry
    gx = cupy.empty((g.N, g.H, g.W, g.C), dtype=gy.dtype)
    _gpu.launch("depthwise_backward_input_nhwc", gy.dtype, gx.size, cupy.ascontiguousarray(gy),
                cupy.ascontiguousarray(w), gx, *_gpu_args(g, mult))
    return gx


def backward_weight_cuda(gy, x, geometry, mult):
    _same_dtype("depthwise backward_weight", gy, x)
    import cupy
    g = geometry
    gw = cupy.empty((g.KH, g.KW, g.C * mult), dtype=x.dtype)
    _gpu.launch_blocks("depthwise_backward_weight_nhwc", x.dtype, gw.size, REDUCTION_THREADS,
                       cupy.ascontiguousarray(gy), cupy.ascontiguousarray(x), gw,
                       *_gpu_args(g, mult))
    return gw


# ----------------------------------------------------------------------------- registry

#: x (N, H, W, C), w (KH, KW, C·mult) -> y (N, OH, OW, C·mult)
forward = register_kernel("depthwise_forward", forward_reference, numba=forward_numba,
                          cuda=forward_cuda)
#: gy (N, OH, OW, C·mult), w (KH, KW, C·mult) -> gx (N, H, W, C)
backward_input = register_kernel("depthwise_backward_input", backward_input_reference,
                                 numba=backward_input_numba, cuda=backward_input_cuda)
#: gy (N, OH, OW, C·mult), x (N, H, W, C) -> gw (KH, KW, C·mult)
backward_weight = register_kernel("depthwise_backward_weight", backward_weight_reference,
                                  numba=backward_weight_numba, cuda=backward_weight_cuda)
