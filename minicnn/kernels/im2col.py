"""im2col and col2im: turning a convolution into one matrix product.

Notation (as in every kernel here)::

    N batch, H W input height and width, C input channels, G groups, Cg = C / G
    KH KW kernel, SH SW stride, PH PW padding, DH DW dilation, OH OW output size
    M = N·OH·OW output positions, K = KH·KW·Cg values under one window of one group

im2col copies, for every output position m = (n, oh, ow), the KH×KW×Cg input values its
window covers into row m of a matrix, one matrix per group::

    cols[g, m, (i·KW + j)·Cg + c] = x[n, oh·SH − PH + i·DH, ow·SW − PW + j·DW, g·Cg + c]

(0 where the window hangs over the padding). The convolution is then a GEMM:
``y[g] = cols[g] @ w[g]`` with w[g] of shape (K, C_out/G).

col2im is its adjoint: every entry of cols is *added* back to the input position it
was copied from. That is the input gradient of the convolution: gx = col2im(gy @ wᵀ).

Why channels last: with C innermost, the Cg values under one kernel tap are contiguous
in both x and cols, so each copy is a run of memcpy-like stores. With NCHW they would be
C separate strided gathers; on this machine a ResNet layer-2 im2col drops from ≈31 ms to
≈9 ms (a bare copy of the same bytes takes ≈8 ms).
"""
import numpy as np
from numba import njit, prange

from minicnn.backend import get_array_module
from minicnn.kernels import _gpu
from minicnn.kernels import output_size
from minicnn.kernels.registry import register_kernel
from minicnn.kernels.threads import over_blocks


class ConvGeometry:
    """Everything about a sliding window except the numbers: sizes, stride, padding.

    ``input_shape`` is channels-last (N, H, W, C); ``out_channels`` (CO) is known to a
    convolution, not to the im2col kernels, which never read it.
    """

    def __init__(self, input_shape, kernel_size, stride, padding, dilation, groups=1,
                 out_channels=None):
        self.input_shape = tuple(input_shape)
        self.N, self.H, self.W, self.C = input_shape
        self.KH, self.KW = kernel_size
        self.SH, self.SW = stride
        self.PH, self.PW = padding
        self.DH, self.DW = dilation
        self.G = groups
        self.OH = output_size(self.H, self.KH, self.SH, self.PH, self.DH)
        self.OW = output_size(self.W, self.KW, self.SW, self.PW, self.DW)
        self.Cg = self.C // groups
        self.M = self.N * self.OH * self.OW
        self.K = self.KH * self.KW * self.Cg
        self.CO = out_channels

    def with_batch(self, N):
        """The same convolution over N samples (a sub-batch of this one)."""
        return ConvGeometry((N, self.H, self.W, self.C), (self.KH, self.KW), (self.SH, self.SW),
                            (self.PH, self.PW), (self.DH, self.DW), self.G, self.CO)

    def args(self):
        """The integers every kernel takes, in one fixed order."""
        return (self.KH, self.KW, self.SH, self.SW, self.PH, self.PW, self.DH, self.DW,
                self.OH, self.OW, self.G)


# ----------------------------------------------------------------------------- reference

def im2col_reference(x, geometry):
    """Plain NumPy: pad once, then copy one strided slice per kernel tap (i, j)."""
    g, xp = geometry, get_array_module(x)
    padded = xp.pad(x, ((0, 0), (g.PH, g.PH), (g.PW, g.PW), (0, 0)))
    cols = xp.empty((g.N, g.OH, g.OW, g.KH, g.KW, g.C), dtype=x.dtype)
    for i in range(g.KH):
        for j in range(g.KW):
            top, left = i * g.DH, j * g.DW
            cols[:, :, :, i, j, :] = padded[:, top:top + g.SH * (g.OH - 1) + 1:g.SH,
                                               left:left + g.SW * (g.OW - 1) + 1:g.SW, :]
    # (N, OH, OW, KH, KW, G, Cg) -> (G, M, K)
    cols = cols.reshape(g.N, g.OH, g.OW, g.KH, g.KW, g.G, g.Cg)
    return cols.transpose(5, 0, 1, 2, 3, 4, 6).reshape(g.G, g.M, g.K)


def col2im_reference(cols, geometry):
    """Plain NumPy: add each kernel tap's slice back into a padded gradient, then crop."""
    g, xp = geometry, get_array_module(cols)
    cols = cols.reshape(g.G, g.N, g.OH, g.OW, g.KH, g.KW, g.Cg).transpose(1, 2, 3, 4, 5, 0, 6)
    cols = cols.reshape(g.N, g.OH, g.OW, g.KH, g.KW, g.C)
    padded = xp.zeros((g.N, g.H + 2 * g.PH, g.W + 2 * g.PW, g.C), dtype=cols.dtype)
    for i in range(g.KH):
        for j in range(g.KW):
            top, left = i * g.DH, j * g.DW
            padded[:, top:top + g.SH * (g.OH - 1) + 1:g.SH,
                   left:left + g.SW * (g.OW - 1) + 1:g.SW, :] += cols[:, :, :, i, j, :]
    return padded[:, g.PH:g.PH + g.H, g.PW:g.PW + g.W, :]


# ----------------------------------------------------------------------------- cpu (Numba)

@njit(nogil=True, cache=True)
def _copy(destination, source):
    """destination[:] = source[:] for two runs of one length."""
    for t in range(destination.size):
        destination[t] = source[t]


@njit(nogil=True, cache=True)
def _im2col_rows_numba(x, cols, first, last, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, G):
    """Row-major columns, cols (G, M, K), for output rows (n, oh) = first … last − 1 (a
    thread's block, see kernels/threads.py): for layers with many channels."""
    N, H, W, C = x.shape
    Cg = C // G
    # With one group and no horizontal dilation, the KW taps of one kernel row read KW·C
    # consecutive input values and write KW·C consecutive columns: copy them as one run
    # (a loop over two views, which compiles to a memcpy; an array-to-array slice
    # assignment would also do, but compiling its size-mismatch error message took 2 of
    # the 3 seconds this kernel took to compile).
    runs = G == 1 and DW == 1
    K = KH * KW * C
    flat_x, flat_cols = x.reshape(-1), cols.reshape(-1)   # flat indices: no view per run
    for row in range(first, last):       # each thread fills whole rows of cols: no sharing
        n, oh = row // OH, row % OH
        for ow in range(OW):
            m = row * OW + ow
            iw0 = ow * SW - PW
            j0, j1 = min(KW, max(0, -iw0)), max(0, min(KW, W - iw0))  # taps inside the input
            j1 = max(j0, j1)
            for i in range(KH):
                ih = oh * SH - PH + i * DH
                if runs:
                    start = m * K + i * KW * C                 # where this kernel row goes
                    run = flat_cols[start:start + KW * C]
                    if ih < 0 or ih >= H:
                        run[:] = 0
                        continue
                    first = ((n * H + ih) * W + iw0 + j0) * C   # first input value inside
                    run[:j0 * C] = 0
                    _copy(run[j0 * C:j1 * C], flat_x[first:first + (j1 - j0) * C])
                    run[j1 * C:] = 0
                    continue
                for j in range(KW):
                    iw = iw0 + j * DW
                    base = (i * KW + j) * Cg
                    inside = 0 <= ih < H and 0 <= iw < W
                    for g in range(G):
                        for c in range(Cg):
                            cols[g, m, base + c] = x[n, ih, iw, g * Cg + c] if inside else 0


@njit(parallel=True, cache=True)
def _im2col_columns_numba(x, cols_t, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, G):
    """Column-major columns, cols_t (G, K, M) = colsᵀ: for layers with few channels.

    Row k of cols_t is one (tap, channel) of the window slid over the whole batch: for a
    fixed input row, the OW values it takes are every SW·C-th input value of that row —
    consecutive ones when C = 1 and the stride is 1, copied as one slice. The row-major
    kernel would instead copy runs of KW·C = 5 values (LeNet's first layer) one short
    loop at a time.
    """
    N, H, W, C = x.shape
    Cg = C // G
    K = KH * KW * Cg
    M = N * OH * OW
    flat_x, flat_cols = x.reshape(-1), cols_t.reshape(-1)
    step = SW * C                        # input distance between neighbouring ow
    for task in prange(G * K * N):       # each thread fills whole (row k, sample n) stretches
        n = task % N
        k = (task // N) % K
        g = task // (N * K)
        c, tap = k % Cg, k // Cg
        i, j = tap // KW, tap % KW
        shift = j * DW - PW              # tap j of window ow reads column iw = ow·SW + shift
        lo = min(OW, max(0, (-shift + SW - 1) // SW))          # lo ≤ ow < hi: inside the
        hi = max(lo, min(OW, (W - shift + SW - 1) // SW))      # input, the rest is padding
        for oh in range(OH):
            ih = oh * SH - PH + i * DH
            out = (g * K + k) * M + (n * OH + oh) * OW         # where this stretch goes
            if ih < 0 or ih >= H:
                flat_cols[out:out + OW] = 0
                continue
            flat_cols[out:out + lo] = 0
            first = ((n * H + ih) * W + shift) * C + g * Cg + c   # input value of ow = 0
            if step == 1:
                flat_cols[out + lo:out + hi] = flat_x[first + lo:first + hi]
            else:
                for ow in range(lo, hi):
                    flat_cols[out + ow] = flat_x[first + ow * step]
            flat_cols[out + hi:out + OW] = 0


@njit(nogil=True, cache=True)
def _col2im_numba(cols, gx, first, last, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, G):
    """gx of samples first … last − 1 (zeros on entry)."""
    N, H, W, C = gx.shape
    Cg = C // G
    for n in range(first, last):         # each thread owns whole samples of gx: no races
        for oh in range(OH):
            for ow in range(OW):
                m = (n * OH + oh) * OW + ow
                for i in range(KH):
                    ih = oh * SH - PH + i * DH
                    if ih < 0 or ih >= H:
                        continue
                    for j in range(KW):
                        iw = ow * SW - PW + j * DW
                        if iw < 0 or iw >= W:
                            continue
                        base = (i * KW + j) * Cg
                        for g in range(G):
                            for c in range(Cg):
                                gx[n, ih, iw, g * Cg + c] += cols[g, m, base + c]


# Below this many values per kernel row (KW·C) the column-major kernel wins: LeNet-5's
# first layer (KW·C = 5) 1.8 → 0.4 ms at batch 64; ResNet's 64-channel layers (192) stay
# row-major, where each run is a memcpy. It is the total channel count C that decides, not
# the count per group: the column-major kernel reads every SW·C-th input value, so with
# many channels it strides through memory however short each group's run (ResNeXt's
# 32×4d 3×3 at 28×28, batch 16: forward 41 → 26 ms once it went row-major).
SHORT_RUN = 16


def im2col_numba(x, geometry):
    """cols (G, M, K); for short runs, the transposed view of a (G, K, M) array — the GEMM
    takes either order at the same speed (BLAS reads a transposed operand in place)."""
    g = geometry
    if g.KW * g.C < SHORT_RUN:
        cols_t = np.empty((g.G, g.K, g.M), dtype=x.dtype)
        _im2col_columns_numba(x, cols_t, *g.args())
        return cols_t.transpose(0, 2, 1)
    cols = np.empty((g.G, g.M, g.K), dtype=x.dtype)
    over_blocks(lambda first, last: _im2col_rows_numba(x, cols, first, last, *g.args()),
                g.N * g.OH, g.OW * g.G * g.K)
    return cols


def col2im_numba(cols, geometry):
    g = geometry
    gx = np.zeros((g.N, g.H, g.W, g.C), dtype=cols.dtype)
    over_blocks(lambda first, last: _col2im_numba(cols, gx, first, last, *g.args()),
                g.N, g.OH * g.OW * g.G * g.K)
    return gx


# ----------------------------------------------------------------------------- gpu (CuPy)

_gpu.register("im2col_nhwc", r"""
extern "C" __global__ void im2col_nhwc(
        const T* x, T* cols, int N, int H, int W, int C,
        int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW,
        int OH, int OW, int G) {
    // one thread per element of cols (G, M, K); consecutive threads walk the channels
    int Cg = C / G, K = KH * KW * Cg;
    long long M = (long long)N * OH * OW;
    long long total = G * M * K;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        int k = idx % K;  long long gm = idx / K;
        long long m = gm % M;  int g = gm / M;
        int c = k % Cg, tap = k / Cg, j = tap % KW, i = tap / KW;
        int ow = m % OW, oh = (m / OW) % OH, n = m / ((long long)OW * OH);
        int ih = oh * SH - PH + i * DH, iw = ow * SW - PW + j * DW;
        cols[idx] = (ih >= 0 && ih < H && iw >= 0 && iw < W)
            ? x[(((long long)n * H + ih) * W + iw) * C + g * Cg + c] : (T)0;
    }
}
""")

_gpu.register("col2im_nhwc", r"""
extern "C" __global__ void col2im_nhwc(
        const T* cols, T* gx, int N, int H, int W, int C,
        int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW,
        int OH, int OW, int G) {
    // one thread per input element: it *gathers* every cols entry copied from it,
    // so no two threads write the same address and no atomics are needed
    int Cg = C / G, K = KH * KW * Cg;
    long long M = (long long)N * OH * OW;
    long long total = (long long)N * H * W * C;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        int c_all = idx % C, iw = (idx / C) % W, ih = (idx / ((long long)C * W)) % H;
        int n = idx / ((long long)C * W * H);
        int g = c_all / Cg, c = c_all % Cg;
        T sum = 0;
        for (int i = 0; i < KH; ++i) {
            int oh_s = ih + PH - i * DH;
            if (oh_s < 0 || oh_s % SH) continue;
            int oh = oh_s / SH;  if (oh >= OH) continue;
            for (int j = 0; j < KW; ++j) {
                int ow_s = iw + PW - j * DW;
                if (ow_s < 0 || ow_s % SW) continue;
                int ow = ow_s / SW;  if (ow >= OW) continue;
                long long m = ((long long)n * OH + oh) * OW + ow;
                sum += cols[((long long)g * M + m) * K + (i * KW + j) * Cg + c];
            }
        }
        gx[idx] = sum;
    }
}
""")


def _shape_args(g):
    return (np.int32(g.N), np.int32(g.H), np.int32(g.W), np.int32(g.C)) + tuple(
        np.int32(v) for v in g.args())


def im2col_cuda(x, geometry):
    import cupy
    g = geometry
    x = cupy.ascontiguousarray(x)
    cols = cupy.empty((g.G, g.M, g.K), dtype=x.dtype)
    _gpu.launch("im2col_nhwc", x.dtype, cols.size, x, cols, *_shape_args(g))
    return cols


def col2im_cuda(cols, geometry):
    import cupy
    g = geometry
    gx = cupy.empty((g.N, g.H, g.W, g.C), dtype=cols.dtype)
    _gpu.launch("col2im_nhwc", cols.dtype, gx.size, cupy.ascontiguousarray(cols), gx,
                *_shape_args(g))
    return gx


# ----------------------------------------------------------------------------- registry

#: (N, H, W, C) channels-last input -> cols (G, M, K); see the module docstring
im2col = register_kernel("im2col", im2col_reference, numba=im2col_numba, cuda=im2col_cuda)
#: cols (G, M, K) -> (N, H, W, C) gradient, adding overlapping windows together
col2im = register_kernel("col2im", col2im_reference, numba=col2im_numba, cuda=col2im_cuda)
