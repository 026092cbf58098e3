"""2-D convolution: dense, grouped, depthwise, dilated, strided, rectangular.

Shape legend (the notation of minicnn/kernels/im2col.py)::

    x   (N, C, H, W)               input, NCHW as the user sees it
    w   (CO, C/G, KH, KW)          weight, G = groups, CO = output channels
    b   (CO,)                      bias
    y   (N, CO, OH, OW)            output
    cols (G, M, K)                 im2col of x: M = N·OH·OW rows, K = KH·KW·C/G columns
    wmat (G, K, CO/G)              w rearranged to match the columns' (i, j, c) order

    y[n, o, oh, ow] = b[o] + Σ_{c,i,j} x[n, g·Cg + c, oh·SH − PH + i·DH, ow·SW − PW + j·DW]
                                      · w[o, c, i, j]           (g = o // (CO/G))

Algorithm, chosen per call (all produce channels-last y):

* **1×1, no padding** — a plain GEMM on the (strided) input: no im2col at all.
* **depthwise** (G == C > 1, CO = C·mult) — a direct kernel (kernels/depthwise.py).
  (One input channel, as LeNet's first layer, is a dense convolution: a GEMM does it.)
* **3×3, stride 1, many channels** (CPU) — Winograd's F(4×4, 3×3): 36 GEMMs with a
  quarter of im2col's multiplications, between two cheap tile transforms
  (kernels/winograd.py; its docstring derives forward and backward).
* **everything else** — im2col + one GEMM, or one *batched* GEMM over the G groups. On
  the CPU, a dense convolution with long rows (K ≥ 256) does this one sub-batch at a time
  so that the column matrix stays in cache (``BLOCK_BYTES``; ResNet-18 ≈ 1.35× faster).

The sub-batch paths (blocked im2col, Winograd) work one block of samples at a time:
samples share no input pixels, so each block is a convolution of its own.

Backward (per group g, with gy as an (M, CO/G) matrix):

    gb = Σ_m gy[m, :]        gwmat = colsᵀ @ gy        gcols = gy @ wmatᵀ,  gx = col2im(gcols)

The column matrix is recomputed in backward instead of being kept from forward: for a
3×3 convolution it is 9× the size of its input, and keeping one per layer would dominate
a network's memory (ResNet-50 at batch 8 would hold ≈3 GB of columns). Re-running
im2col costs ≈¼ of one GEMM. Small column matrices (≤ ``KEEP_COLUMNS_BYTES``) are kept:
there the memory is nothing and, the GEMMs being small too, im2col is a larger share.

Layout: results are returned as NCHW *views* of channels-last (N, OH, OW, CO) memory — the
GEMM produces exactly that order, so there is no transpose copy, and the next layer's
im2col reads contiguous channel runs. Elementwise ops keep the layout; ``flatten`` before
a Linear layer copies into NCHW order, so the user-visible semantics are plain NCHW.
"""
import numpy as np

from minicnn.backend import get_array_module, sum_rows
from minicnn.kernels import channels_first_view, channels_last, depthwise, winograd
from minicnn.kernels.im2col import ConvGeometry, col2im, im2col
from minicnn.tensor import Function

# Column matrices of the whole-batch path up to this size are kept from forward for
# backward: all of LeNet-5's up to batch 128. (At batch 256 its first layer's matrix is
# 20 MB and is rebuilt; keeping it too, with a 32 MB limit, measured no faster.)
KEEP_COLUMNS_BYTES = 16 << 20

# Dense convolutions with long rows (K ≥ BLOCKED_MIN_K) run im2col and GEMM one sub-batch
# at a time, sized so that its column matrix (≤ BLOCK_BYTES) is still in cache when the
# GEMM reads it, instead of a whole-batch matrix written to memory and read back.
# ResNet-18 CIFAR training at batch 64: ≈ 36 → ≈ 48 images/s (its first-stage column
# matrix is 150 MB); VGG-16-BN ≈ 67 → ≈ 80; 1, 2, 8 and 16 MB were all slower than 4.
# Short rows (LeNet-5, K = 25 and 150; a 3-channel stem, K = 27) make GEMMs too small to
# split: there blocking was slower.
BLOCK_BYTES = 4 << 20
BLOCKED_MIN_K = 256

# Winograd F(m×m, 3×3) for stride-1 3×3 convolutions with at least this many input and
# output channels: below it the tile transforms, not the GEMMs, take the time. (ResNet-20
# on 28×28 at batch 64 trains at ≈330 img/s with a limit of 16, ≈395 with 32, ≈385
# without Winograd; DenseNet-121 and GoogLeNet gain from every limit up to 32.)
# ResNet-18 CIFAR layers at batch 64, forward + backward, im2col+GEMM → F(4×4, 3×3):
# 74 → 37 ms (16×16, 128 channels), 73 → 34 (8×8, 256), 89 → 43 (4×4, 512). F(2×2, 3×3)
# took 52, 43 and 45 ms: more GEMM work for the same transforms. float32 results differ
# from im2col's by ≈ 1e-6 relative (F(4×4) sums products of constants up to 8;
# tests/test_winograd.py bounds it).
WINOGRAD_TILE = 4
WINOGRAD_MIN_CHANNELS = 32


def _pair(value, name):
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"conv2d: {name} must be an int or an (h, w) pair, got {value!r}")
    return value


class Conv2d(Function):
    """The convolution Function; see the module docstring for the math and shapes."""

    def __init__(self, stride=1, padding=0, dilation=1, groups=1):
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        self.groups = int(groups)

    # -- checks ------------------------------------------------------------------
    def _validate(self, x, w, b):
        if x.ndim != 4:
            raise ValueError(f"conv2d: expected input of rank 4 (N, C, H, W), got shape {x.shape}")
        if w.ndim != 4:
            raise ValueError(f"conv2d: expected weight of rank 4 (C_out, C_in/groups, KH, KW), "
                             f"got shape {w.shape}")
        if x.dtype.kind != "f" or w.dtype.kind != "f":
            raise TypeError(f"conv2d: expected floating-point input and weight, got "
                            f"{x.dtype} and {w.dtype}")
        if x.dtype != w.dtype:
            raise TypeError(f"conv2d: input is {x.dtype} but weight is {w.dtype}; cast one "
                            f"(model.double() or x.astype(...))")
        if get_array_module(x) is not get_array_module(w):
            raise ValueError("conv2d: input and weight live on different devices")
        C, G = x.shape[1], self.groups
        if G < 1 or C % G or w.shape[0] % G:
            raise ValueError(f"conv2d: input channels ({C}) and output channels "
                             f"({w.shape[0]}) must be divisible by groups ({G})")
        if w.shape[1] * G != C:
            raise ValueError(f"conv2d: weight {w.shape} expects {w.shape[1] * G} input "
                             f"channels (C_in/groups = {w.shape[1]}, groups = {G}), "
                             f"but the input has {C} (shape {x.shape})")
        if b is not None and b.shape != (w.shape[0],):
            raise ValueError(f"conv2d: bias must have shape ({w.shape[0]},), got {b.shape}")
        (PH, PW), (DH, DW) = self.padding, self.dilation
        span_h, span_w = DH * (w.shape[2] - 1) + 1, DW * (w.shape[3] - 1) + 1
        if span_h > x.shape[2] + 2 * PH or span_w > x.shape[3] + 2 * PW:
            raise ValueError(f"conv2d: kernel {w.shape[2]}×{w.shape[3]} (dilated "
                             f"{span_h}×{span_w}) is larger than the padded input "
                             f"{x.shape[2] + 2 * PH}×{x.shape[3] + 2 * PW} (input shape "
                             f"{x.shape}, padding {self.padding})")

    # -- forward -----------------------------------------------------------------
    def forward(self, x, w, b=None):
        self._validate(x, w, b)
        xp = get_array_module(x)
        CO, Cg, KH, KW = w.shape
        G = self.groups
        x_nhwc = channels_last(x)
        geometry = ConvGeometry(x_nhwc.shape, (KH, KW), self.stride, self.padding,
                                self.dilation, G)
        self.geometry, self.x_nhwc, self.w_shape = geometry, x_nhwc, w.shape
        self.has_bias = b is not None

        if G == x.shape[1] > 1 and Cg == 1:                  # depthwise
            self.path = "depthwise"
            self.w_taps = xp.ascontiguousarray(w.reshape(CO, KH * KW).T).reshape(KH, KW, CO)
            y = depthwise.forward(x_nhwc, self.w_taps, geometry, CO // G)
        elif xp is np and self._winograd_applies(geometry):
            self.path = "winograd"
            y = self._winograd_forward(x_nhwc, w)
        else:
            y = self._matmul_forward(x_nhwc, w).reshape(geometry.N, geometry.OH, geometry.OW, CO)
        if b is not None:
            y += b
        return channels_first_view(y)

    def _matmul_forward(self, x_nhwc, w):
        """The GEMM paths: pointwise, blocked im2col, whole-batch im2col. (M, CO)."""
        xp = get_array_module(x_nhwc)
        geometry, G = self.geometry, self.groups
        CO, Cg, KH, KW = w.shape

        # wmat[g, (i·KW + j)·Cg + c, o'] = w[g·COg + o', c, i, j]
        COg = CO // G
        wmat = w.reshape(G, COg, Cg, KH, KW).transpose(0, 3, 4, 2, 1).reshape(G, geometry.K, COg)
        self.wmat = wmat
        if (KH, KW) == (1, 1) and self.padding == (0, 0) and G == 1:
            self.path = "pointwise"
            SH, SW = self.stride
            source = x_nhwc if (SH, SW) == (1, 1) else x_nhwc[:, ::SH, ::SW][:, :geometry.OH, :geometry.OW]
            cols = xp.ascontiguousarray(source).reshape(1, geometry.M, geometry.K)
        elif xp is np and G == 1 and geometry.K >= BLOCKED_MIN_K:
            self.path = "blocked"
            cols = None
        else:
            self.path = "im2col"
            cols = im2col(x_nhwc, geometry)
        if cols is None:
            self.cols = None
            return self._blocked_forward(x_nhwc, wmat[0])
        self.cols = cols if cols.nbytes <= KEEP_COLUMNS_BYTES else None
        return _grouped_matmul(cols, wmat)                   # (M, CO), channels-last order

    # -- backward ----------------------------------------------------------------
    def backward(self, gy):
        g, G = self.geometry, self.groups
        need_x, need_w = self.needs_input_grad[0], self.needs_input_grad[1]
        need_b = self.has_bias and self.needs_input_grad[2]
        xp = get_array_module(gy)
        gy_nhwc = channels_last(gy)
        CO = gy_nhwc.shape[3]
        gb = sum_rows(gy_nhwc.reshape(-1, CO)) if need_b else None

        if self.path == "depthwise":
            mult = CO // G
            gx = gw = None
            if need_x:
                gx = channels_first_view(depthwise.backward_input(gy_nhwc, self.w_taps, g, mult))
            if need_w:
                taps = depthwise.backward_weight(gy_nhwc, self.x_nhwc, g, mult)
                gw = xp.ascontiguousarray(taps.reshape(-1, CO).T).reshape(self.w_shape)
            return (gx, gw, gb) if self.has_bias else (gx, gw)

        if self.path == "winograd":
            gx, gw = self._winograd_backward(gy_nhwc, need_x, need_w)
            return (gx, gw, gb) if self.has_bias else (gx, gw)

        COg = CO // G
        # gy as G matrices (M, CO/G); a copy only when there are several groups
        gy_mat = gy_nhwc.reshape(g.M, CO)
        gy_groups = gy_mat[None] if G == 1 else xp.ascontiguousarray(
            gy_mat.reshape(g.M, G, COg).transpose(1, 0, 2))
        gx = gw = None
        if self.path == "blocked":
            gx_nhwc, gwmat = self._blocked_backward(gy_mat, need_x, need_w)
        elif need_w:
            cols = self._columns()
            gwmat = cols.transpose(0, 2, 1) @ gy_groups       # (G, K, CO/G)
            del cols
        if need_w:
            _, Cg, KH, KW = self.w_shape
            gw = gwmat.reshape(G, KH, KW, Cg, COg).transpose(0, 4, 3, 1, 2).reshape(self.w_shape)
            gw = xp.ascontiguousarray(gw)
        if need_x and self.path == "blocked":
            gx = channels_first_view(gx_nhwc)
        elif need_x:
            gcols = gy_groups @ self.wmat.transpose(0, 2, 1)  # (G, M, K)
            gx = channels_first_view(self._columns_to_input(gcols))
        return (gx, gw, gb) if self.has_bias else (gx, gw)

    # -- the blocked path: im2col and GEMM one sub-batch at a time -------------------
    def _sample_blocks(self):
        """Sub-batches whose column matrix fits in BLOCK_BYTES: (first, last, geometry)."""
        g = self.geometry
        per_sample = g.OH * g.OW * g.K * self.x_nhwc.itemsize
        for first, last in _batch_slices(g.N, per_sample, BLOCK_BYTES):
            yield first, last, ConvGeometry((last - first, g.H, g.W, g.C), (g.KH, g.KW),
                                            self.stride, self.padding, self.dilation, 1)

    def _blocked_forward(self, x_nhwc, wmat):
        g = self.geometry
        rows = g.OH * g.OW
        y = np.empty((g.M, wmat.shape[1]), dtype=np.result_type(x_nhwc, wmat))
        for first, last, sub in self._sample_blocks():
            cols = im2col(x_nhwc[first:last], sub)[0]
            np.matmul(cols, wmat, out=y[first * rows:last * rows])
        return y

    def _blocked_backward(self, gy_mat, need_x, need_w):
        """gx (N, H, W, C) block by block, and gwmat (1, K, CO) = Σ_blocks colsᵀ @ gy (a sum
        over rows splits); the shapes the whole-batch path has."""
        g = self.geometry
        rows = g.OH * g.OW
        wmat = self.wmat[0]
        gwmat = np.zeros((1,) + wmat.shape, dtype=gy_mat.dtype) if need_w else None
        gx = np.empty((g.N, g.H, g.W, g.C), dtype=gy_mat.dtype) if need_x else None
        for first, last, sub in self._sample_blocks():
            gy_block = gy_mat[first * rows:last * rows]
            if need_w:
                cols = im2col(self.x_nhwc[first:last], sub)[0]
                gwmat[0] += cols.T @ gy_block
            if need_x:
                gx[first:last] = col2im((gy_block @ wmat.T)[None], sub)
        return gx, gwmat

    # -- the Winograd path (kernels/winograd.py): forward and its adjoint ------------
    def _winograd_applies(self, g):
        return ((g.KH, g.KW) == (3, 3) and self.stride == (1, 1) and self.dilation == (1, 1)
                and g.G == 1 and min(g.C, self.w_shape[0]) >= WINOGRAD_MIN_CHANNELS)

    def _winograd_blocks(self):
        """Sub-batches whose tiles (V or M, α²·tiles·channels) fit in BLOCK_BYTES — or in
        the size of U when that is larger: every block's GEMMs read all of U, so a block
        smaller than U would re-read more than it saves (ResNet's 512-channel layers).
        Yields (first, last, tiling)."""
        g, t = self.geometry, self.tiling
        per_sample = t.alpha ** 2 * t.TH * t.TW * max(g.C, self.w_shape[0]) * self.x_nhwc.itemsize
        budget = max(BLOCK_BYTES, self.U.nbytes)
        for first, last in _batch_slices(g.N, per_sample, budget):
            yield first, last, winograd.WinogradTiling((last - first, g.H, g.W, g.C), self.padding,
                                                       WINOGRAD_TILE, self.x_nhwc.dtype)

    def _winograd_forward(self, x_nhwc, w):
        """y = Aᵀ [V @ Uᵀ] A per block, V = Bᵀ d B, U = G w Gᵀ."""
        g = self.geometry
        self.tiling = winograd.WinogradTiling(x_nhwc.shape, self.padding, WINOGRAD_TILE, x_nhwc.dtype)
        self.U = winograd.filter_transform(w, self.tiling)              # (α², CO, C)
        U_t = self.U.transpose(0, 2, 1)
        y = np.zeros((g.N, g.OH, g.OW, w.shape[0]), dtype=np.result_type(x_nhwc, w))
        for first, last, tiling in self._winograd_blocks():
            V = winograd.input_transform(x_nhwc[first:last], tiling)     # (α², T, C)
            winograd.output_transform(np.matmul(V, U_t), tiling, out=y[first:last])
        return y

    def _winograd_backward(self, gy_nhwc, need_x, need_w):
        """gM = A gY Aᵀ; gU = Σ_blocks gMᵀ @ V, gw = Gᵀ gU G; gx = B (gM @ U) Bᵀ, added."""
        g = self.geometry
        gx = np.zeros((g.N, g.H, g.W, g.C), dtype=gy_nhwc.dtype) if need_x else None
        gU = None
        for first, last, tiling in self._winograd_blocks():
            gM = winograd.output_transform_adjoint(gy_nhwc[first:last], tiling)  # (α², T, CO)
            if need_w:
                V = winograd.input_transform(self.x_nhwc[first:last], tiling)
                block_gU = np.matmul(gM.transpose(0, 2, 1), V)          # (α², CO, C)
                if gU is None:
                    gU = block_gU
                else:
                    gU += block_gU
            if need_x:
                winograd.input_transform_adjoint(np.matmul(gM, self.U), tiling, out=gx[first:last])
        gw = winograd.filter_transform_adjoint(gU, self.tiling) if need_w else None
        return (channels_first_view(gx) if need_x else None), gw

    def _columns(self):
        """The forward pass's column matrix: kept if small, else rebuilt (see the module
        docstring for why)."""
        if self.cols is not None:
            return self.cols
        g = self.geometry
        xp = get_array_module(self.x_nhwc)
        if self.path == "pointwise":
            SH, SW = self.stride
            source = self.x_nhwc if (SH, SW) == (1, 1) else self.x_nhwc[:, ::SH, ::SW][:, :g.OH, :g.OW]
            return xp.ascontiguousarray(source).reshape(1, g.M, g.K)
        return im2col(self.x_nhwc, g)

    def _columns_to_input(self, gcols):
        g = self.geometry
        if self.path == "pointwise":
            SH, SW = self.stride
            columns = gcols.reshape(g.N, g.OH, g.OW, g.C)
            if (SH, SW) == (1, 1):
                return columns
            xp = get_array_module(gcols)
            gx = xp.zeros((g.N, g.H, g.W, g.C), dtype=gcols.dtype)
            gx[:, :SH * g.OH:SH, :SW * g.OW:SW] = columns
            return gx
        return col2im(gcols, g)


def _batch_slices(N, per_sample_bytes, budget):
    """(first, last) ranges of samples, each holding about ``budget`` bytes."""
    step = max(1, budget // per_sample_bytes)
    for first in range(0, N, step):
        yield first, min(N, first + step)


def _grouped_matmul(cols, wmat):
    """cols (G, M, K) @ wmat (G, K, CO/G) -> (M, CO): one GEMM, or one batched GEMM."""
    G, M, _ = cols.shape
    if G == 1:
        return cols[0] @ wmat[0]
    y = cols @ wmat                                           # (G, M, CO/G)
    return get_array_module(y).ascontiguousarray(y.transpose(1, 0, 2)).reshape(M, -1)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Convolve NCHW ``x`` with ``weight`` (C_out, C_in/groups, KH, KW); see module doc.

    Every size argument is an int or an (h, w) pair. Padding is symmetric per axis; pad
    asymmetrically with ``F.pad`` first (TensorFlow's "same" at stride 2).
    """
    function = Conv2d(stride, padding, dilation, groups)
    return function(x, weight) if bias is None else function(x, weight, bias)
