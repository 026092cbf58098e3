"""2-D convolution: dense, grouped, depthwise, dilated, strided, rectangular.

Shape legend (the notation of minicnn/kernels/im2col.py)::

    x    (N, H, W, C)         input, channels-last (the user's NCHW tensor, see Layout)
    w    (CO, C/G, KH, KW)    weight, G = groups, CO = output channels
    b    (CO,)                bias
    y    (N, OH, OW, CO)      output
    cols (G, M, K)            im2col of x: M = N·OH·OW rows, K = KH·KW·C/G columns
    wmat (G, K, CO/G)         w rearranged to match the columns' (i, j, c) order
    gy   (G, M, CO/G)         the output gradient, one matrix per group

    y[n, oh, ow, o] = b[o] + Σ_{c,i,j} x[n, oh·SH − PH + i·DH, ow·SW − PW + j·DW, g·C/G + c]
                                       · w[o, c, i, j]            (g = o // (CO/G))

A convolution is a matrix product once every window is copied into a row (im2col); its
gradients are the two other products of the same matrices, and col2im (im2col's adjoint)
adds the rows back onto the input::

    forward                            backward
    cols = im2col(x)                   gwmat = colsᵀ @ gy      (G, K, CO/G)
    y    = cols @ wmat                 gcols = gy @ wmatᵀ      (G, M, K)
                                       gx    = col2im(gcols)   (N, H, W, C)

(The code computes gwmat's transpose, gyᵀ @ cols (G, CO/G, K), which is already in the
weight's (CO, ...) order: see ``weight_from_transposed``.)

``Im2colGemm`` below is exactly that. The other algorithms compute the same numbers
faster for some shapes; each is a small class with the same four members (``name``,
``applies``, ``forward``, ``backward``), and ``choose_algorithm`` picks one per call:

* ``Pointwise``     1×1, no padding: the input *is* the column matrix (a strided view).
* ``BlockedIm2col`` (CPU, long rows) im2col + GEMM one sub-batch at a time, so that the
                    column matrix is still in cache when the GEMM reads it.
* ``Depthwise``     G == C: a direct kernel (kernels/depthwise.py); im2col would copy
                    KH·KW values per output to multiply each by one weight.
* ``Winograd``      (CPU) stride-1 3×3 with many channels: F(4×4, 3×3), 36 GEMMs with a
                    quarter of im2col's multiplications (kernels/winograd.py derives it).
* ``Direct``        (CPU) stride 1, few input channels, or few per group on large planes
                    (ResNeXt's first stage): no column matrix; each tap is one
                    multiply-add of contiguous runs (kernels/direct.py).
* ``Grouped``       (CPU) the other G > 1, not depthwise (ResNeXt): im2col + one batched
                    GEMM over the groups, a sub-batch at a time, every operand contiguous.

An algorithm's ``forward(ctx, x, w)`` and ``backward(ctx, gy, need_x, need_w)`` receive the
``Conv2d`` Function as ``ctx``: forward keeps what its backward needs with
``ctx.save_for_backward(...)``, backward reads it back from ``ctx.saved``.

Force one algorithm to compare them: ``F.conv2d(..., conv_algorithm="im2col")`` and
``nn.Conv2d(..., conv_algorithm=...)`` (an error where it cannot compute the convolution),
or for a whole run ``MINICNN_CONV_ALGORITHM=im2col`` / ``with force_conv_algorithm("im2col"):``
(used wherever it applies, the chooser elsewhere). Under ``MINICNN_KERNELS=reference`` the
chooser picks the textbook ``Im2colGemm`` everywhere.

Layout: results are returned as NCHW *views* of channels-last (N, OH, OW, CO) memory — the
GEMM produces exactly that order, so there is no transpose copy, and the next layer's
im2col reads contiguous channel runs. Elementwise ops keep the layout; ``flatten`` before
a Linear layer copies into NCHW order, so the user-visible semantics are plain NCHW.
"""
import contextlib
import os

from minicnn.backend import device_of, get_array_module, sum_rows
from minicnn.functional.geometry import check_channels, check_window_fits, checked_pair, is_int
from minicnn.kernels import channels_first_view, channels_last, depthwise, direct, winograd
from minicnn.kernels.im2col import ConvGeometry, col2im, im2col
from minicnn.kernels.registry import current_mode
from minicnn.kernels.threads import gemm
from minicnn.tensor import Function


# ============================================================================ the textbook algorithm

class Im2colGemm:
    """im2col → one GEMM → reshape; any convolution. (G > 1: one batched GEMM.)"""
    name = "im2col"

    @staticmethod
    def applies(geometry, device):
        return True

    @staticmethod
    def forward(ctx, x, w):
        g = ctx.geometry
        cols = im2col(x, g)                                   # (G, M, K)
        wmat = weight_matrix(w, g)                            # (G, K, CO/G)
        y = grouped_matmul(cols, wmat)                        # (M, CO)
        # small column matrices are kept, large ones rebuilt (see KEEP_COLUMNS_BYTES)
        ctx.save_for_backward(x, cols if cols.nbytes <= KEEP_COLUMNS_BYTES else None, wmat)
        return y.reshape(g.N, g.OH, g.OW, g.CO)

    @staticmethod
    def backward(ctx, gy, need_x, need_w):
        g = ctx.geometry
        x, kept_cols, wmat = ctx.saved
        gy = output_groups(gy, g)                             # (G, M, CO/G)
        gx = gw = None
        if need_w:
            cols = im2col(x, g) if kept_cols is None else kept_cols
            gw = weight_from_transposed(gemm(gy.transpose(0, 2, 1), cols), g)
            del cols                           # before gcols, as large, is made
        if need_x:
            gx = col2im(gemm(gy, wmat.transpose(0, 2, 1)), g)      # (N, H, W, C)
        return gx, gw


def weight_matrix(w, g):
    """w (CO, C/G, KH, KW) -> wmat (G, K, CO/G): wmat[g, (i·KW + j)·C/G + c, o'] =
    w[g·CO/G + o', c, i, j], the columns' order."""
    return (w.reshape(g.G, g.CO // g.G, g.Cg, g.KH, g.KW).transpose(0, 3, 4, 2, 1)
            .reshape(g.G, g.K, g.CO // g.G))


def weight_from_transposed(gwt, g):
    """gwt (G, CO/G, K) -> gw (CO, C/G, KH, KW): the weight gradient computed as
    gyᵀ @ cols, so that only the K axis, (i, j, c) -> (c, i, j), is reordered — for a 1×1
    kernel nothing is. (colsᵀ @ gy, then the whole (K, CO) matrix transposed instead: 82 ms
    of ResNeXt-50's training step at batch 16, more than the GEMMs that made the
    matrices.)"""
    gw = gwt.reshape(g.G, g.CO // g.G, g.KH, g.KW, g.Cg).transpose(0, 1, 4, 2, 3)
    return get_array_module(gw).ascontiguousarray(gw).reshape(g.CO, g.Cg, g.KH, g.KW)


def grouped_matmul(cols, wmat):
    """cols (G, M, K) @ wmat (G, K, CO/G) -> (M, CO): one GEMM, or one batched GEMM."""
    G, M, _ = cols.shape
    if G == 1:
        return gemm(cols[0], wmat[0])
    y = cols @ wmat                                           # (G, M, CO/G)
    return get_array_module(y).ascontiguousarray(y.transpose(1, 0, 2)).reshape(M, -1)


def output_groups(gy, g):
    """gy (N, OH, OW, CO) -> (G, M, CO/G); a copy only when there are several groups."""
    gy = gy.reshape(g.M, g.CO)
    if g.G == 1:
        return gy[None]
    return get_array_module(gy).ascontiguousarray(
        gy.reshape(g.M, g.G, g.CO // g.G).transpose(1, 0, 2))


# ============================================================================ the Function

class Conv2d(Function):
    """The convolution Function: checks its arguments, lets ``choose_algorithm`` pick how
    to compute, and adds the bias. The maths and shapes are in the module docstring;
    ``gb[o] = Σ_m gy[m, o]`` is the bias gradient whatever the algorithm."""

    def __init__(self, stride=1, padding=0, dilation=1, groups=1, conv_algorithm=None):
        self.stride = checked_pair(stride, "stride", "conv2d")
        self.padding = checked_pair(padding, "padding", "conv2d")
        self.dilation = checked_pair(dilation, "dilation", "conv2d")
        if not is_int(groups) or groups < 1:
            raise ValueError(f"conv2d: groups must be a positive int, got {groups!r}")
        self.groups = int(groups)
        self.requested = check_algorithm_name(conv_algorithm, "conv2d")

    def forward(self, x, w, b=None):
        self.geometry = self._checked_geometry(x, w, b)
        self.algorithm = choose_algorithm(self.geometry, device_of(x), self.requested)
        self.dtype, self.has_bias = w.dtype, b is not None
        y = self.algorithm.forward(self, channels_last(x), w)
        if b is not None:
            y += b
        return channels_first_view(y)

    def backward(self, gy):
        need_x, need_w = self.needs_input_grad[:2]
        # The kernels are compiled for one element type: an upstream gradient of another
        # (float64 ones for a float32 model) is cast once here, for every algorithm alike.
        gy = channels_last(gy if gy.dtype == self.dtype else gy.astype(self.dtype))
        gx, gw = self.algorithm.backward(self, gy, need_x, need_w)
        gx = None if gx is None else channels_first_view(gx)
        if not self.has_bias:
            return gx, gw
        gb = sum_rows(gy.reshape(-1, gy.shape[3])) if self.needs_input_grad[2] else None
        return gx, gw, gb

    @property
    def path(self):
        """The name of the algorithm that ran (``"im2col"``, ``"winograd"``, ...)."""
        return self.algorithm.name

    def _checked_geometry(self, x, w, b):
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
        N, C, H, W = x.shape
        CO, G = w.shape[0], self.groups
        check_channels("conv2d", C, CO, G)
        if w.shape[1] * G != C:
            raise ValueError(f"conv2d: weight {w.shape} expects {w.shape[1] * G} input "
                             f"channels (C_in/groups = {w.shape[1]}, groups = {G}), "
                             f"but the input has {C} (shape {x.shape})")
        if b is not None and b.shape != (CO,):
            raise ValueError(f"conv2d: bias must have shape ({CO},), got {b.shape}")
        kernel = checked_pair(tuple(w.shape[2:]), "kernel_size", "conv2d")
        check_window_fits("conv2d", x.shape, kernel, self.padding, self.dilation)
        return ConvGeometry((N, H, W, C), kernel, self.stride, self.padding, self.dilation,
                            G, CO)


# ============================================================================ faster algorithms

class Pointwise:
    """1×1, no padding: row m of the column matrix is the input pixel under window m, so
    the (strided) input itself is the matrix and the convolution is one plain GEMM."""
    name = "pointwise"

    @staticmethod
    def applies(geometry, device):
        g = geometry
        return (g.KH, g.KW) == (1, 1) and (g.PH, g.PW) == (0, 0) and g.G == 1

    @staticmethod
    def forward(ctx, x, w):
        g = ctx.geometry
        cols = pointwise_columns(x, g)                        # (M, C)
        wmat = weight_matrix(w, g)[0]                         # (C, CO)
        ctx.save_for_backward(x, cols if cols.nbytes <= KEEP_COLUMNS_BYTES else None, wmat)
        return gemm(cols, wmat).reshape(g.N, g.OH, g.OW, g.CO)

    @staticmethod
    def backward(ctx, gy, need_x, need_w):
        g = ctx.geometry
        x, kept_cols, wmat = ctx.saved
        gy = gy.reshape(g.M, g.CO)
        gx = gw = None
        if need_w:
            cols = pointwise_columns(x, g) if kept_cols is None else kept_cols
            gw = weight_from_transposed(gemm(gy.T, cols)[None], g)
        if need_x:
            gx = pointwise_columns_adjoint(gemm(gy, wmat.T), g)
        return gx, gw


def pointwise_columns(x, g):
    """x (N, H, W, C) -> (M, C): the pixels a 1×1 window visits at stride (SH, SW)
    (free for stride 1 and contiguous x; one strided copy otherwise)."""
    if (g.SH, g.SW) != (1, 1):
        x = x[:, ::g.SH, ::g.SW][:, :g.OH, :g.OW]
    return get_array_module(x).ascontiguousarray(x).reshape(g.M, g.C)


def pointwise_columns_adjoint(gcols, g):
    """(M, C) -> gx (N, H, W, C): each row back onto the pixel it was read from (zero on
    the pixels a stride skips)."""
    gcols = gcols.reshape(g.N, g.OH, g.OW, g.C)
    if (g.SH, g.SW) == (1, 1):
        return gcols
    gx = get_array_module(gcols).zeros((g.N, g.H, g.W, g.C), dtype=gcols.dtype)
    gx[:, :g.SH * g.OH:g.SH, :g.SW * g.OW:g.SW] = gcols
    return gx


class BlockedIm2col:
    """Im2colGemm one sub-batch of samples at a time (one group): samples share no input
    pixels, so each block is a convolution of its own, and a block's column matrix
    (≤ BLOCK_BYTES) is still in cache when its GEMM reads it. gw sums over blocks (a sum
    over rows splits). On the GPU the blocks are GPU_BLOCK_BYTES: there the point is a
    bounded column matrix, not the cache."""
    name = "blocked"

    @staticmethod
    def applies(geometry, device):
        return geometry.G == 1

    @staticmethod
    def forward(ctx, x, w):
        g = ctx.geometry
        xp = get_array_module(x)
        wmat = weight_matrix(w, g)[0]                         # (K, CO)
        rows = g.OH * g.OW
        y = xp.empty((g.M, g.CO), dtype=xp.result_type(x, wmat))
        for first, last in sample_blocks(g.N, rows * g.K * x.itemsize, block_bytes(x)):
            cols = im2col(x[first:last], g.with_batch(last - first))[0]
            gemm(cols, wmat, out=y[first * rows:last * rows])
        ctx.save_for_backward(x, wmat)
        return y.reshape(g.N, g.OH, g.OW, g.CO)

    @staticmethod
    def backward(ctx, gy, need_x, need_w):
        g = ctx.geometry
        x, wmat = ctx.saved
        xp = get_array_module(gy)
        gy = gy.reshape(g.M, g.CO)
        rows = g.OH * g.OW
        gwt = xp.zeros((1, g.CO, g.K), dtype=gy.dtype) if need_w else None
        gx = xp.empty((g.N, g.H, g.W, g.C), dtype=gy.dtype) if need_x else None
        for first, last in sample_blocks(g.N, rows * g.K * x.itemsize, block_bytes(x)):
            block, gy_block = g.with_batch(last - first), gy[first * rows:last * rows]
            if need_w:
                gwt[0] += gemm(gy_block.T, im2col(x[first:last], block)[0])
            if need_x:
                gx[first:last] = col2im(gemm(gy_block, wmat.T)[None], block)
        return gx, (weight_from_transposed(gwt, g) if need_w else None)


class Depthwise:
    """G == C, CO = C·mult: output channel c·mult + t reads input channel c only; a direct
    kernel, no column matrix. Weights as taps, channels-last: w_taps (KH, KW, CO)."""
    name = "depthwise"

    @staticmethod
    def applies(geometry, device):
        return geometry.G == geometry.C

    @staticmethod
    def forward(ctx, x, w):
        g = ctx.geometry
        xp = get_array_module(w)
        w_taps = xp.ascontiguousarray(w.reshape(g.CO, g.KH * g.KW).T).reshape(g.KH, g.KW, g.CO)
        ctx.save_for_backward(x, w_taps)
        return depthwise.forward(x, w_taps, g, g.CO // g.G)

    @staticmethod
    def backward(ctx, gy, need_x, need_w):
        g = ctx.geometry
        x, w_taps = ctx.saved
        xp = get_array_module(gy)
        mult = g.CO // g.G
        gx = depthwise.backward_input(gy, w_taps, g, mult) if need_x else None
        gw = None
        if need_w:
            taps = depthwise.backward_weight(gy, x, g, mult)          # (KH, KW, CO)
            gw = xp.ascontiguousarray(taps.reshape(-1, g.CO).T).reshape(g.CO, 1, g.KH, g.KW)
        return gx, gw


class Winograd:
    """F(m×m, 3×3) for stride-1 3×3 convolutions, one sample block at a time::

        y = Aᵀ [V @ Uᵀ] A,  V = Bᵀ d B (input tiles),  U = G w Gᵀ (filters)

    backward, the adjoint of each step: gM = A gY Aᵀ; gU = Σ_blocks gMᵀ @ V, gw = Gᵀ gU G;
    gx = B (gM @ U) Bᵀ, overlapping tiles added. (kernels/winograd.py derives it.)

    gU is four times the size of gw (α² = 36 values per filter against 9) and each of its
    values sums only the block's tiles: at 4×4 outputs with 512 channels (ResNet-18's last
    stage, batch 64) it is 37.7 MB made from a GEMM with an inner dimension of 64, which
    takes its time writing memory. So it is made a slice of output channels at a time, each
    slice at most BLOCK_BYTES, and turned into its part of gw while it is still in cache
    (the filter transform's adjoint is linear, so the blocks' parts add up in gw)."""
    name = "winograd"

    @staticmethod
    def applies(geometry, device):
        g = geometry
        return ((g.KH, g.KW) == (3, 3) and (g.SH, g.SW) == (1, 1)
                and (g.DH, g.DW) == (1, 1) and g.G == 1)

    @staticmethod
    def forward(ctx, x, w):
        g = ctx.geometry
        xp = get_array_module(x)
        tiling = winograd.WinogradTiling(x.shape, (g.PH, g.PW), WINOGRAD_TILE, x.dtype)
        U = winograd.filter_transform(w, tiling)                      # (α², CO, C)
        U_t = U.transpose(0, 2, 1)
        y = xp.empty((g.N, g.OH, g.OW, g.CO), dtype=xp.result_type(x, w))  # blocks fill it
        for first, last, block in Winograd.blocks(x, U, tiling):
            V = winograd.input_transform(x[first:last], block)        # (α², T, C)
            winograd.output_transform(gemm(V, U_t), block, out=y[first:last])
        ctx.save_for_backward(x, U, tiling)
        return y

    @staticmethod
    def backward(ctx, gy, need_x, need_w):
        g = ctx.geometry
        x, U, tiling = ctx.saved
        xp = get_array_module(gy)
        gx = xp.empty((g.N, g.H, g.W, g.C), dtype=gy.dtype) if need_x else None
        gw = xp.zeros((g.CO, g.C, 3, 3), dtype=gy.dtype) if need_w else None
        slices = list(sample_blocks(g.CO, tiling.alpha ** 2 * g.C * x.itemsize, BLOCK_BYTES))
        for first, last, block in Winograd.blocks(x, U, tiling):
            gM = winograd.output_transform_adjoint(gy[first:last], block)  # (α², T, CO)
            if need_w:
                V = winograd.input_transform(x[first:last], block)
                for o0, o1 in slices:
                    gU = gemm(gM[:, :, o0:o1].transpose(0, 2, 1), V)  # (α², o, C)
                    gw[o0:o1] += winograd.filter_transform_adjoint(gU, tiling)
            if need_x:
                winograd.input_transform_adjoint(gemm(gM, U), block, out=gx[first:last])
        return gx, gw

    @staticmethod
    def multiplications_ratio(geometry, tile=None):
        """Winograd's multiplications over im2col's for this output: α² = 36 per m×m tile
        (tiles cover the output rounded up to whole tiles) against 9 per output value."""
        g, m = geometry, tile or WINOGRAD_TILE
        tiles = -(-g.OH // m) * -(-g.OW // m)
        return (m + 2) ** 2 * tiles / (9 * g.OH * g.OW)

    @staticmethod
    def blocks(x, U, tiling):
        """Sub-batches whose tiles (V or M, α²·tiles·channels) fit in BLOCK_BYTES — or in
        the size of U when that is larger: every block's GEMMs read all of U, so a block
        smaller than U would re-read more than it saves (ResNet's 512-channel layers).
        Yields (first, last, tiling of the block)."""
        t = tiling
        per_sample = t.alpha ** 2 * t.TH * t.TW * max(U.shape[1:]) * x.itemsize
        for first, last in sample_blocks(t.N, per_sample, max(BLOCK_BYTES, U.nbytes)):
            yield first, last, winograd.WinogradTiling(
                (last - first, t.H, t.W, t.C), (t.PH, t.PW), t.m, x.dtype)


def block_bytes(x):
    """The column bytes BlockedIm2col gives one block of ``x``'s samples on its device."""
    return GPU_BLOCK_BYTES if device_of(x) == "gpu" else BLOCK_BYTES


class Grouped:
    """G > 1 groups (ResNeXt's 32): im2col and one batched GEMM over the groups, one
    sub-batch of samples at a time, every GEMM operand contiguous::

        block b of samples, Mb = rows of the block:
        cols_b  (G, Mb, K)       im2col of the block
        y_b     (G, Mb, CO/G)  = cols_b @ wmat                  -> y[rows of b] (Mb, G, CO/G)
        gwmat  += cols_bᵀ @ gy_b                                (G, K, CO/G)
        gx_b    = col2im(gy_b @ wmatᵀ)                          (wmatᵀ made contiguous once)

    Why not Im2colGemm: a grouped column matrix is narrow (K = 9·Cg = 36, CO/G = 4 in
    ResNeXt-50's first stage), so its GEMMs are cheap and the time goes into im2col and
    col2im, which touch the matrix once each: a block of ≤ BLOCK_BYTES is still in cache
    when its GEMM reads it, and no column matrix is kept for backward (it is rebuilt one
    block at a time). And NumPy's batched matmul with the transposed view ``wmatᵀ`` as
    right operand leaves BLAS for a plain loop: 730 ms instead of 1 ms for that product in
    ResNeXt-50's first stage (batch 16, 16×16), so wmatᵀ is copied (a few KB) first."""
    name = "grouped"

    @staticmethod
    def applies(geometry, device):
        return geometry.G > 1

    @staticmethod
    def forward(ctx, x, w):
        g = ctx.geometry
        xp = get_array_module(x)
        wmat = weight_matrix(w, g)                            # (G, K, CO/G)
        rows = g.OH * g.OW
        y = xp.empty((g.M, g.G, g.CO // g.G), dtype=xp.result_type(x, wmat))
        for first, last in sample_blocks(g.N, rows * g.G * g.K * x.itemsize,
                                         block_bytes(x)):
            cols = im2col(x[first:last], g.with_batch(last - first))          # (G, Mb, K)
            y[first * rows:last * rows] = (cols @ wmat).transpose(1, 0, 2)
        ctx.save_for_backward(x, wmat)
        return y.reshape(g.N, g.OH, g.OW, g.CO)

    @staticmethod
    def backward(ctx, gy, need_x, need_w):
        g = ctx.geometry
        x, wmat = ctx.saved
        xp = get_array_module(gy)
        gy = gy.reshape(g.M, g.G, g.CO // g.G)
        wmat_t = xp.ascontiguousarray(wmat.transpose(0, 2, 1))          # (G, CO/G, K)
        rows = g.OH * g.OW
        gwt = xp.zeros(wmat_t.shape, dtype=gy.dtype) if need_w else None
        gx = xp.empty((g.N, g.H, g.W, g.C), dtype=gy.dtype) if need_x else None
        for first, last in sample_blocks(g.N, rows * g.G * g.K * x.itemsize,
                                         block_bytes(x)):
            block = g.with_batch(last - first)
            gy_block = xp.ascontiguousarray(gy[first * rows:last * rows].transpose(1, 0, 2))
            if need_w:
                gwt += gy_block.transpose(0, 2, 1) @ im2col(x[first:last], block)
            if need_x:
                gx[first:last] = col2im(gy_block @ wmat_t, block)
        return gx, (weight_from_transposed(gwt, g) if need_w else None)


def sample_blocks(N, per_sample_bytes, budget):
    """(first, last) ranges of samples, each holding about ``budget`` bytes."""
    step = max(1, budget // per_sample_bytes)
    for first in range(0, N, step):
        yield first, min(N, first + step)


class Direct:
    """Stride 1, few input channels or few per group (a grayscale stem, LeNet-5's first
    layer, ResNeXt's early grouped layers): a direct loop with no column matrix
    (kernels/direct.py). Weights as taps, w_taps (KH, KW, C/G, CO) — im2col's wmat with the
    groups' output channels side by side — so the backward is the same three formulas,
    group by group::

        y = Σ_taps window(x) @ w_taps[i, j]     gw_taps[i, j] = window(x)ᵀ @ gy
                                                gx = Σ_taps (gy @ w_taps[i, j]ᵀ) back under the window
    """
    name = "direct"

    @staticmethod
    def applies(geometry, device):
        return (geometry.SH, geometry.SW) == (1, 1)

    @staticmethod
    def forward(ctx, x, w):
        g = ctx.geometry
        w_taps = _weight_taps(w)
        ctx.save_for_backward(x, w_taps)
        return direct.direct_forward(x, w_taps, g)

    @staticmethod
    def backward(ctx, gy, need_x, need_w):
        g = ctx.geometry
        x, w_taps = ctx.saved
        gx = direct.direct_backward_input(gy, w_taps, g) if need_x else None
        gw = None
        if need_w:
            gw_taps = direct.direct_backward_weight(gy, x, g)     # (KH, KW, C/G, CO)
            gw = _weight_from_taps(gw_taps)
        return gx, gw


def _weight_taps(w):
    """w (CO, C/G, KH, KW) -> w_taps (KH, KW, C/G, CO), contiguous."""
    return get_array_module(w).ascontiguousarray(w.transpose(2, 3, 1, 0))


def _weight_from_taps(w_taps):
    """w_taps (KH, KW, C/G, CO) -> w (CO, C/G, KH, KW), contiguous: the inverse."""
    return get_array_module(w_taps).ascontiguousarray(w_taps.transpose(3, 2, 0, 1))


# ============================================================================ choosing one

ALGORITHMS = {algorithm.name: algorithm
              for algorithm in (Im2colGemm, Pointwise, BlockedIm2col, Depthwise, Winograd,
                                Grouped, Direct)}

# Column matrices up to this size are kept from forward for backward: all of LeNet-5's up
# to batch 128. Larger ones are rebuilt: for a 3×3 convolution the matrix is 9× its input,
# and keeping one per layer would dominate a network's memory (ResNet-50 at batch 8 would
# hold ≈3 GB of columns), while re-running im2col costs ≈¼ of one GEMM. (At batch 256
# LeNet-5's first matrix is 20 MB and is rebuilt; keeping it too, with a 32 MB limit,
# measured no faster.)
KEEP_COLUMNS_BYTES = 16 << 20

# Blocked im2col for dense convolutions with long rows (K ≥ BLOCKED_MIN_K), in blocks of
# BLOCK_BYTES of columns. ResNet-18 CIFAR training at batch 64: ≈ 36 → ≈ 48 images/s (its
# first-stage column matrix is 150 MB); VGG-16-BN ≈ 67 → ≈ 80; 1, 2, 8 and 16 MB blocks
# were all slower than 4. Short rows (LeNet-5, K = 25 and 150; a 3-channel stem, K = 27)
# make GEMMs too small to split: there blocking was slower.
BLOCK_BYTES = 4 << 20
BLOCKED_MIN_K = 256
# On the GPU a GEMM wants every row it can get, so columns are split only when they would
# be large: VGG-16's conv1_2 at batch 128 (M = 6.4 M rows of K = 576) would need 14.8 GB of
# float32 columns, more than most GPUs hold. Blocks of 256 MB keep each GEMM long enough to
# fill the device (≥ 100 k rows for K ≤ 576) and the columns bounded.
GPU_BLOCK_BYTES = 256 << 20

# Winograd F(4×4, 3×3) with at least WINOGRAD_MIN_CHANNELS input and output channels:
# below it the tile transforms, not the GEMMs, take the time. (ResNet-20 on 28×28 at batch
# 64 trains at ≈330 img/s with a limit of 16, ≈395 with 32, ≈385 without Winograd;
# DenseNet-121 and GoogLeNet gain from every limit up to 32.) ResNet-18 CIFAR layers at
# batch 64, forward + backward, im2col+GEMM → F(4×4, 3×3): 74 → 37 ms (16×16, 128
# channels), 73 → 34 (8×8, 256), 89 → 43 (4×4, 512). F(2×2, 3×3) took 52, 43 and 45 ms:
# more GEMM work for the same transforms. float32 results differ from im2col's by ≈ 1e-6
# relative (F(4×4) sums products of constants up to 8; tests/test_winograd.py bounds it).
WINOGRAD_TILE = 4
WINOGRAD_MIN_CHANNELS = 32
# ... and only where it saves multiplications: an output smaller than a tile still costs
# a whole tile. At 2×2 (VGG-16's last stage on 32×32 input, DenseNet's and GoogLeNet's on
# 64×64) F(4×4, 3×3) does as many multiplications as im2col (ratio 1.0), through 36 small
# GEMMs that each read all of U: one thread, batch 64, 512 → 512 channels, forward
# 31.8 ms against im2col's 16.8. At 3×3, 5×5 and 6×6 outputs (ratios 0.44–0.64) Winograd
# forward tied with im2col and forward + backward won by 14–38% (same run).
WINOGRAD_MAX_RATIO = 0.75

# Grouped: every grouped convolution on the CPU that is not depthwise. ResNeXt-50 32×4d's
# grouped 3×3 layers at batch 16 on 64×64 input, forward + backward, median of 5 (min–max),
# Im2colGemm → Grouped: 16×16×128: 984 (916–986) → 94 (87–100) ms; 8×8×256: 216 → 20;
# 4×4×512: 792 → 2.9; 2×2×1024: 203 → 2.9. Im2colGemm's time is NumPy's non-BLAS loop
# for gy @ wmatᵀ (see Grouped). A direct Numba loop over the groups (no columns; tried and
# dropped) took 134, 29, 24, 16 ms where Grouped took 107, 23, 16, 15 in the same run: with
# 4 to 32 channels per group its inner loops are too short to vectorize. (2 cores shared
# with other jobs: compare within a run only.)
#
# ... except where Direct's runs are long and the groups narrow: Direct (the planes of
# kernels/direct.py, whose inner loop is a run along an output plane, not along a group's
# channels) for stride-1 grouped layers with at most GROUPED_DIRECT_MAX_CHANNELS input
# channels per group and output planes of at least GROUPED_DIRECT_MIN_RUN values
# (``direct.run_length``). There im2col copies C/G floats at a time and its loops cost
# more than the GEMM. Grouped → Direct, 32 groups, forward + backward at batch 16 on two
# threads (inference: batch 8, one thread), ms, one run: C = 128 (4 per group) at 16×16
# 20.1 → 6.8 (4.05 → 1.51), 32×32 at batch 4 16.0 → 7.0, 12×12 7.9 → 4.2, 8×8 3.3 → 2.5
# (1.00 → 0.58), but 4×4 (runs of 22) 1.2 → 1.5; C = 64 and 96 (2 and 3 per group) 3.7–
# 5.6× faster from 8×8 up; C = 256 (8 per group) 16×16 22.5 → 21.4 but 28×28 13.1 → 14.9
# and 8×8 4.9 → 8.0 (inference 0.85, 0.96 and 0.46×): 8 per group is where im2col's runs
# start to pay. ResNeXt-50 32×4d on 64×64 input: its first stage (16×16, 128 channels).
GROUPED_DIRECT_MAX_CHANNELS = 4
GROUPED_DIRECT_MIN_RUN = 64

# Direct convolution (CPU) where a kernel row holds fewer than DIRECT_MAX_RUN input values
# (KW·C: LeNet-5's first layer, 5). Forward, one thread, batch 64, LeNet-5's first layer:
# im2col + GEMM ≈ 0.95 ms, direct ≈ 0.65–0.8 ms (no 3.7 MB column matrix either); weight
# gradient ≈ 0.7 ms against ≈ 0.4 ms for the GEMM on columns kept from forward, so a
# training step breaks even — but the first step no longer compiles the parallel im2col
# kernel (see minicnn/kernels/direct.py). LeNet-5's second layer (KW·C = 30): direct
# ≈ 1.4 ms, im2col + GEMM ≈ 0.55 ms — many channels need the GEMM.
DIRECT_MAX_RUN = 8


def choose_algorithm(geometry, device, requested=None):
    """The algorithm for one convolution on ``device`` ("cpu" or "gpu").

    ``requested`` (a name from ``ALGORITHMS``, given to F.conv2d or nn.Conv2d) must apply;
    an algorithm forced for the whole run (``force_conv_algorithm``, MINICNN_CONV_ALGORITHM)
    is used where it applies. Otherwise the first rule that holds decides; every threshold
    is a constant above with the measurement that set it.
    """
    g = geometry
    if requested is not None:
        if not ALGORITHMS[requested].applies(g, device):
            raise ValueError(f"conv2d: conv_algorithm={requested!r} cannot compute this "
                             f"convolution ({g.KH}×{g.KW} kernel, stride {(g.SH, g.SW)}, "
                             f"padding {(g.PH, g.PW)}, dilation {(g.DH, g.DW)}, groups "
                             f"{g.G}, {g.C} input channels)")
        return ALGORITHMS[requested]
    if _forced is not None and ALGORITHMS[_forced].applies(g, device):
        return ALGORITHMS[_forced]
    if current_mode() == "reference":
        return Im2colGemm                     # the textbook, for reading and as the truth
    if g.G == g.C > 1:                        # (one channel is a dense convolution)
        return Depthwise
    if device == "cpu" and g.G > 1:           # (the measurements: above, "Grouped")
        if (Direct.applies(g, device) and g.Cg <= GROUPED_DIRECT_MAX_CHANNELS
                and direct.run_length(g) >= GROUPED_DIRECT_MIN_RUN):
            return Direct
        return Grouped
    if (device == "cpu" and Winograd.applies(g, device)
            and min(g.C, g.CO) >= WINOGRAD_MIN_CHANNELS
            and Winograd.multiplications_ratio(g) <= WINOGRAD_MAX_RATIO):
        return Winograd
    if Pointwise.applies(g, device):
        return Pointwise
    if device == "cpu" and Direct.applies(g, device) and g.KW * g.C < DIRECT_MAX_RUN:
        return Direct
    if device == "cpu" and g.G == 1 and g.K >= BLOCKED_MIN_K:
        return BlockedIm2col
    if device == "gpu" and g.G == 1 and g.M * g.K * 4 > GPU_BLOCK_BYTES:   # float32 columns
        return BlockedIm2col
    return Im2colGemm


def check_algorithm_name(name, owner):
    """``None`` (let the chooser decide) or one of ``ALGORITHMS``' names."""
    if name is not None and name not in ALGORITHMS:
        raise ValueError(f"{owner}: conv_algorithm must be one of "
                         f"{', '.join(sorted(ALGORITHMS))} or None, got {name!r}")
    return name


_forced = check_algorithm_name(os.environ.get("MINICNN_CONV_ALGORITHM") or None,
                               "MINICNN_CONV_ALGORITHM")


@contextlib.contextmanager
def force_conv_algorithm(name):
    """Inside the block, every convolution uses algorithm ``name`` wherever it applies
    (``None``: the chooser's pick everywhere)."""
    global _forced
    previous, _forced = _forced, check_algorithm_name(name, "force_conv_algorithm")
    try:
        yield
    finally:
        _forced = previous


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           conv_algorithm=None):
    """Convolve NCHW ``x`` with ``weight`` (C_out, C_in/groups, KH, KW); see module doc.

    Every size argument is an int or an (h, w) pair. Padding is symmetric per axis; pad
    asymmetrically with ``F.pad`` first (TensorFlow's "same" at stride 2).
    ``conv_algorithm`` forces one of ``ALGORITHMS`` (to compare them); by default
    ``choose_algorithm`` picks.
    """
    function = Conv2d(stride, padding, dilation, groups, conv_algorithm)
    return function(x, weight) if bias is None else function(x, weight, bias)
