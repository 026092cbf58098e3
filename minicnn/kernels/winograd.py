"""Winograd's minimal filtering: a 3×3 convolution with fewer multiplications.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016). In one
dimension, F(m, 3) computes m outputs of a 3-tap correlation, y[i] = Σ_k d[i + k]·g[k],
from α = m + 2 inputs with α multiplications instead of 3m::

    y = Aᵀ [ (G g) ⊙ (Bᵀ d) ]                  A (α×m), G (α×3), B (α×α) fixed matrices

Nesting it once along each axis gives F(m×m, 3×3): an m×m output tile from an α×α
input tile d and a 3×3 filter g, with α² multiplications instead of 9m²::

    Y = Aᵀ [ U ⊙ V ] A,      U = G g Gᵀ  (filter transform),  V = Bᵀ d B  (input transform)

Over many channels the elementwise product becomes a sum, Σ_c U[c, o] ⊙ V[t, c], which
is α² independent matrix products, one per position ξ = (a, b) of the α×α tile::

    M[ξ] = V[ξ] @ U[ξ]         V[ξ] (T tiles × C),  U[ξ] (C × CO),  M[ξ] (T × CO)

So a convolution is: transform the input tiles, α² GEMMs, transform the products back.
(In the code U[ξ] is stored CO × C, like the weight, and read transposed by the GEMM.)
The GEMMs hold the flops, and there are fewer of them: 16/36 of im2col's for F(2×2, 3×3),
36/144 for F(4×4, 3×3). The transforms are additions and a few small constants.

**Backward is the adjoint of each linear step.** Y is linear in V for fixed U and in U
for fixed V, so with gM = A gY Aᵀ (the adjoint of the output transform)::

    gU[ξ] = V[ξ]ᵀ @ gM[ξ]      gg = Gᵀ gU G            (filter gradient)
    gV[ξ] = gM[ξ] @ U[ξ]ᵀ      gd = B gV Bᵀ, added     (input gradient; neighbouring
                                                         tiles overlap by 2 pixels)

Every transform here is one *sandwich* S(P, X) = P X Pᵀ of a tile X between a small
matrix P and its transpose; its adjoint is S(Pᵀ, ·). Two kernels do all four tile
transforms: ``gather`` (read tiles from an image, transform each: V, and gM) and
``scatter`` (transform each tile, add it into an image: Y, and gd).

Layout: images are channels-last (N, H, W, C); tiles are (α², T, C) with the T = N·TH·TW
tiles in (n, tile row, tile column) order, so every GEMM operand is a plain matrix.
On the GPU the convolution chooses im2col + cuBLAS; the reference versions below are
written against ``xp`` and run on either device (a forced Winograd on the GPU uses them).
"""
import numpy as np
from numba import njit, prange

from minicnn.backend import get_array_module
from minicnn.kernels.registry import register_kernel
from minicnn.kernels.threads import gemm, over_blocks

# (Aᵀ, G, Bᵀ) for F(m, 3), from Lavin & Gray (2016), with interpolation points
# 0, ±1, ∞ (m = 2) and 0, ±1, ±2, ∞ (m = 4). tests/test_winograd.py checks each against
# the 1-D correlation it stands for.
MATRICES = {
    2: ([[1, 1, 1, 0],
         [0, 1, -1, -1]],
        [[1, 0, 0],
         [1 / 2, 1 / 2, 1 / 2],
         [1 / 2, -1 / 2, 1 / 2],
         [0, 0, 1]],
        [[1, 0, -1, 0],
         [0, 1, 1, 0],
         [0, -1, 1, 0],
         [0, 1, 0, -1]]),
    4: ([[1, 1, 1, 1, 1, 0],
         [0, 1, -1, 2, -2, 0],
         [0, 1, 1, 4, 4, 0],
         [0, 1, -1, 8, -8, 1]],
        [[1 / 4, 0, 0],
         [-1 / 6, -1 / 6, -1 / 6],
         [-1 / 6, 1 / 6, -1 / 6],
         [1 / 24, 1 / 12, 1 / 6],
         [1 / 24, -1 / 12, 1 / 6],
         [0, 0, 1]],
        [[4, 0, -5, 0, 1, 0],
         [0, -4, -4, 1, 1, 0],
         [0, 4, -4, -1, 1, 0],
         [0, -2, -1, 2, 1, 0],
         [0, 2, -1, -2, 1, 0],
         [0, 4, 0, -5, 0, 1]]),
}


class WinogradTiling:
    """How F(m×m, 3×3) cuts a stride-1 3×3 convolution of an (N, H, W, C) input into
    tiles: tile (th, tw) makes outputs [th·m, th·m + m) × [tw·m, tw·m + m) from inputs
    [th·m − PH, th·m − PH + α) × [tw·m − PW, tw·m − PW + α) (zero outside the image)."""

    def __init__(self, input_shape, padding, m, dtype):
        self.N, self.H, self.W, self.C = input_shape
        self.PH, self.PW = padding
        self.m, self.alpha = m, m + 2
        self.OH, self.OW = self.H + 2 * self.PH - 2, self.W + 2 * self.PW - 2
        self.TH, self.TW = -(-self.OH // m), -(-self.OW // m)      # ceil: last tile may hang over
        self.T = self.N * self.TH * self.TW
        AT, G, BT = (np.asarray(matrix, dtype=dtype) for matrix in MATRICES[m])
        self.AT, self.G, self.BT = AT, G, BT


# ----------------------------------------------------------------------------- filters
# Small (C·CO·9 values): plain array code on either device. The 2-D transform of a 3×3
# filter is one matrix product with the Kronecker product of the 1-D ones,
# vec(G g Gᵀ) = (G ⊗ G) vec(g), so the whole bank is one (α² × 9) @ (9 × CO·C) GEMM.
# (An einsum over the four indices took 420 ms for a 512×512 bank.)

def filter_transform(w, tiling):
    """w (CO, C, 3, 3) -> U (α², CO, C),  U[ξ = (a, b)] = Σ_ij G[a, i] w[:, :, i, j] G[b, j].

    U[ξ] is stored (CO × C), as the weight itself: the GEMMs read it transposed in place
    (M[ξ] = V[ξ] @ U[ξ]ᵀ), and neither this transform nor its adjoint copies a transpose."""
    xp = get_array_module(w)
    CO, C = w.shape[:2]
    GG = xp.asarray(np.kron(tiling.G, tiling.G))                 # (α², 9)
    return gemm(GG, w.reshape(CO * C, 9).T).reshape(-1, CO, C)


def filter_transform_adjoint(gU, tiling):
    """gU (α², CO, C) -> gw (CO, C, 3, 3),  gw[:, :, i, j] = Σ_ab G[a, i] gU[a, b] G[b, j]."""
    xp = get_array_module(gU)
    _, CO, C = gU.shape
    GG = xp.asarray(np.kron(tiling.G, tiling.G))
    return gemm(gU.reshape(-1, CO * C).T, GG).reshape(CO, C, 3, 3)


# ----------------------------------------------------------------------------- reference

def _tile_grid(image, size, step, top, left, rows, cols):
    """The size×size tiles of ``image`` (N, H, W, C) at stride ``step``, the first one at
    (top, left), zero outside: (size, size, N, rows, cols, C)."""
    xp = get_array_module(image)
    N, H, W, C = image.shape
    pad_bottom = max(0, top + (rows - 1) * step + size - H)
    pad_right = max(0, left + (cols - 1) * step + size - W)
    padded = xp.pad(image, ((0, 0), (max(0, -top), pad_bottom), (max(0, -left), pad_right), (0, 0)))
    top, left = max(0, top), max(0, left)
    tiles = xp.empty((size, size, N, rows, cols, C), dtype=image.dtype)
    for i in range(size):
        for j in range(size):
            tiles[i, j] = padded[:, top + i:top + i + (rows - 1) * step + 1:step,
                                 left + j:left + j + (cols - 1) * step + 1:step]
    return tiles


def _add_tile_grid(tiles, image_shape, step, top, left):
    """Adjoint of ``_tile_grid``: add every tile back where it was read from, then crop."""
    xp = get_array_module(tiles)
    size, _, N, rows, cols, C = tiles.shape
    H, W = image_shape[1], image_shape[2]
    pad_top, pad_left = max(0, -top), max(0, -left)
    height = max(H + pad_top, top + pad_top + (rows - 1) * step + size)
    width = max(W + pad_left, left + pad_left + (cols - 1) * step + size)
    padded = xp.zeros((N, height, width, C), dtype=tiles.dtype)
    top, left = top + pad_top, left + pad_left
    for i in range(size):
        for j in range(size):
            padded[:, top + i:top + i + (rows - 1) * step + 1:step,
                   left + j:left + j + (cols - 1) * step + 1:step] += tiles[i, j]
    return padded[:, pad_top:pad_top + H, pad_left:pad_left + W]


def _sandwich(P, tiles):
    """S(P, X)[a, b] = Σ_ij P[a, i] X[i, j] P[b, j] for every tile at once."""
    xp = get_array_module(tiles)
    P = xp.asarray(P)
    return xp.einsum("ai,ij...,bj->ab...", P, tiles, P, optimize=True)


def input_transform_reference(x, tiling):
    """x (N, H, W, C) -> V (α², T, C),  V = Bᵀ d B for every α×α input tile d."""
    t = tiling
    d = _tile_grid(x, t.alpha, t.m, -t.PH, -t.PW, t.TH, t.TW)
    return _sandwich(t.BT, d).reshape(t.alpha ** 2, t.T, t.C)


def input_transform_adjoint_reference(gV, tiling, out=None):
    """gV (α², T, C) -> gx (N, H, W, C): gd = B gV Bᵀ per tile, overlapping tiles added
    (written into ``out`` if given)."""
    t = tiling
    gd = _sandwich(t.BT.T, gV.reshape(t.alpha, t.alpha, t.N, t.TH, t.TW, -1))
    return _into(_add_tile_grid(gd, (t.N, t.H, t.W), t.m, -t.PH, -t.PW), out)


def output_transform_reference(M, tiling, out=None):
    """M (α², T, CO) -> y (N, OH, OW, CO),  Y = Aᵀ M A per tile, the overhang cropped
    (written into ``out`` if given)."""
    t = tiling
    Y = _sandwich(t.AT, M.reshape(t.alpha, t.alpha, t.N, t.TH, t.TW, -1))
    return _into(_add_tile_grid(Y, (t.N, t.OH, t.OW), t.m, 0, 0), out)


def _into(result, out):
    """``result``, written into ``out`` when the caller gave an array to fill."""
    if out is None:
        return result
    out[...] = result
    return out


def output_transform_adjoint_reference(gy, tiling):
    """gy (N, OH, OW, CO) -> gM (α², T, CO),  gM = A gY Aᵀ per m×m output tile gY."""
    t = tiling
    gY = _tile_grid(gy, t.m, t.m, 0, 0, t.TH, t.TW)
    return _sandwich(t.AT.T, gY).reshape(t.alpha ** 2, t.T, gy.shape[3])


# ----------------------------------------------------------------------------- cpu (Numba)

@njit(inline="always")
def _add_scaled(target, p, source):
    """target += p · source, over the C channels of one pixel or tile (one SIMD loop)."""
    for c in range(target.shape[0]):
        target[c] += p * source[c]


@njit(parallel=True, cache=True)
def _gather_numba(image, P, step, top, left, TH, TW, tiles):
    """tiles[a·A + b, t] = S(P, X_t)[a, b] for the S×S tile X_t of ``image`` at
    (th·step + top, tw·step + left), zero outside; P is (A, S). Zero entries of P are
    skipped: Bᵀ is half zeros."""
    N, H, W, C = image.shape
    A, S = P.shape
    for row in prange(N * TH):                      # each thread fills whole tile rows
        n, th = row // TH, row % TH
        half = np.empty((A, S, C), dtype=tiles.dtype)
        for tw in range(TW):
            t = row * TW + tw
            h0, w0 = th * step + top, tw * step + left
            half[:] = 0                             # half[a, j] = Σ_i P[a, i] X[i, j]
            for i in range(S):
                h = h0 + i
                if h < 0 or h >= H:
                    continue
                for j in range(S):
                    w = w0 + j
                    if w < 0 or w >= W:
                        continue
                    for a in range(A):
                        if P[a, i] != 0:
                            _add_scaled(half[a, j], P[a, i], image[n, h, w])
            for a in range(A):                      # S(P, X)[a, b] = Σ_j half[a, j] P[b, j]
                for b in range(A):
                    out = tiles[a * A + b, t]
                    out[:] = 0
                    for j in range(S):
                        if P[b, j] != 0:
                            _add_scaled(out, P[b, j], half[a, j])


@njit(parallel=True, cache=True)
def _scatter_numba(tiles, P, step, top, left, TH, TW, image):
    """image[th·step + top + a, tw·step + left + b] += S(P, X_t)[a, b] for every S×S tile
    X_t = tiles[:, t] (inside the image only); P is (A, S).

    Tiles of neighbouring rows overlap when A > step. Rows of one parity never do (2·step
    ≥ A for every F(m, 3) with m ≥ 2), so the even rows run in parallel, then the odd ones;
    the tiles of one row are added in order by one thread.
    """
    N, H, W, C = image.shape
    A, S = P.shape
    for parity in range(2):
        rows_per_sample = (TH - parity + 1) // 2
        for task in prange(N * rows_per_sample):
            n = task // rows_per_sample
            th = parity + 2 * (task % rows_per_sample)
            half = np.empty((A, S, C), dtype=tiles.dtype)
            for tw in range(TW):
                t = (n * TH + th) * TW + tw
                h0, w0 = th * step + top, tw * step + left
                half[:] = 0                         # half[a, j] = Σ_i P[a, i] X[i, j]
                for i in range(S):
                    for a in range(A):
                        if P[a, i] != 0:
                            for j in range(S):
                                _add_scaled(half[a, j], P[a, i], tiles[i * S + j, t])
                for a in range(A):
                    h = h0 + a
                    if h < 0 or h >= H:
                        continue
                    for b in range(A):
                        w = w0 + b
                        if w < 0 or w >= W:
                            continue
                        out = image[n, h, w]
                        for j in range(S):
                            if P[b, j] != 0:
                                _add_scaled(out, P[b, j], half[a, j])


# ----------------------------------------------------------------------------- cpu: F(4×4, 3×3)
#
# The kernels above take P as data: every tile runs loops over P's entries, tests them
# against zero, and makes one pass over the channels per nonzero entry — a tile of
# F(4×4, 3×3)'s input transform is ≈ 290 short passes. For the tile size the convolution
# uses (WINOGRAD_TILE = 4 in functional/conv.py) three of the four transforms are written
# out below, Bᵀ's, Aᵀ's and A's rows as the formulas they are: one pass over the channels
# per row of a tile. The transforms are mostly memory traffic (36 planes written per
# tile), so the gain is modest: one core, a block of 6 samples of 32×32×64 (the size
# ``Winograd.blocks`` hands them): input 0.98 → 0.74 ms, output 0.49 → 0.26, output
# adjoint 0.68 → 0.51; a whole 64-channel 32×32 layer at batch 64 (ResNet-18's first
# stage), forward and backward: 131 → 121 ms; 16×16×128 and 8×8×256: 75 → 72, 60 → 58.
# The fourth, the input adjoint (B gV Bᵀ, overlapping tiles added into the image), was
# written out too and measured slower than the general kernel (0.78 → 0.83 ms on the
# block above: it needs a padded image to add into), so it is not here.
#
#   Bᵀ rows (F(4, 3), MATRICES[4]):   Aᵀ rows:
#     4·d0 − 5·d2 + d4                  m0 + m1 + m2 + m3 + m4
#    −4·(d1 + d2) + d3 + d4             (m1 − m2) + 2·(m3 − m4)
#     4·(d1 − d2) − d3 + d4             (m1 + m2) + 4·(m3 + m4)
#     2·(d3 − d1) − d2 + d4             (m1 − m2) + 8·(m3 − m4) + m5
#     2·(d1 − d3) − d2 + d4
#     4·d1 − 5·d3 + d5

@njit(nogil=True, cache=True)
def _input_tiles_f4(padded, V, first, last, TH, TW, k):
    """V[6·a + b, t] = (Bᵀ d_t B)[a, b] for the tiles t of rows first … last − 1 (row =
    n·TH + th) of ``padded`` (N, 4·TH + 2, 4·TW + 2, C), zero-padded as the convolution
    pads. ``k`` holds the constants 2, 4, 5 in the arrays' dtype (a float literal would
    turn float32 arithmetic into float64)."""
    C = padded.shape[3]
    two, four, five = k[0], k[1], k[2]
    r = np.empty((6, 6, C), dtype=V.dtype)              # r = Bᵀ d, one tile
    for row in range(first, last):
        n, th = row // TH, row % TH
        for tw in range(TW):
            t = row * TW + tw
            h0, w0 = 4 * th, 4 * tw
            for j in range(6):                          # each column of d: r[:, j] = Bᵀ d[:, j]
                d0, d1, d2 = padded[n, h0, w0 + j], padded[n, h0 + 1, w0 + j], padded[n, h0 + 2, w0 + j]
                d3, d4, d5 = padded[n, h0 + 3, w0 + j], padded[n, h0 + 4, w0 + j], padded[n, h0 + 5, w0 + j]
                for c in range(C):
                    r[0, j, c] = four * d0[c] - five * d2[c] + d4[c]
                    r[1, j, c] = d3[c] + d4[c] - four * (d1[c] + d2[c])
                    r[2, j, c] = four * (d1[c] - d2[c]) - d3[c] + d4[c]
                    r[3, j, c] = two * (d3[c] - d1[c]) - d2[c] + d4[c]
                    r[4, j, c] = two * (d1[c] - d3[c]) - d2[c] + d4[c]
                    r[5, j, c] = four * d1[c] - five * d3[c] + d5[c]
            for a in range(6):                          # each row of r: V[a, :] = r[a, :] B
                e0, e1, e2, e3, e4, e5 = r[a, 0], r[a, 1], r[a, 2], r[a, 3], r[a, 4], r[a, 5]
                v0, v1, v2 = V[6 * a, t], V[6 * a + 1, t], V[6 * a + 2, t]
                v3, v4, v5 = V[6 * a + 3, t], V[6 * a + 4, t], V[6 * a + 5, t]
                for c in range(C):
                    v0[c] = four * e0[c] - five * e2[c] + e4[c]
                    v1[c] = e3[c] + e4[c] - four * (e1[c] + e2[c])
                    v2[c] = four * (e1[c] - e2[c]) - e3[c] + e4[c]
                    v3[c] = two * (e3[c] - e1[c]) - e2[c] + e4[c]
                    v4[c] = two * (e1[c] - e3[c]) - e2[c] + e4[c]
                    v5[c] = four * e1[c] - five * e3[c] + e5[c]


@njit(nogil=True, cache=True)
def _output_tiles_f4(M, y, first, last, TH, TW, k):
    """y[n, 4·th + a, 4·tw + b] = (Aᵀ M_t A)[a, b] for the tiles of rows first … last − 1,
    the overhang past (OH, OW) dropped; k as in ``_input_tiles_f4``."""
    OH, OW, C = y.shape[1], y.shape[2], y.shape[3]
    two, four, eight = k[0], k[1], k[3]
    s = np.empty((6, 4, C), dtype=y.dtype)              # s = M A, one tile
    Y = np.empty((4, 4, C), dtype=y.dtype)              # Aᵀ s
    for row in range(first, last):
        n, th = row // TH, row % TH
        for tw in range(TW):
            t = row * TW + tw
            for a in range(6):                          # each row of M: s[a] = M[a, :] A
                m0, m1, m2 = M[6 * a, t], M[6 * a + 1, t], M[6 * a + 2, t]
                m3, m4, m5 = M[6 * a + 3, t], M[6 * a + 4, t], M[6 * a + 5, t]
                for c in range(C):
                    s[a, 0, c] = m0[c] + m1[c] + m2[c] + m3[c] + m4[c]
                    s[a, 1, c] = (m1[c] - m2[c]) + two * (m3[c] - m4[c])
                    s[a, 2, c] = (m1[c] + m2[c]) + four * (m3[c] + m4[c])
                    s[a, 3, c] = (m1[c] - m2[c]) + eight * (m3[c] - m4[c]) + m5[c]
            for b in range(4):                          # each column of s: Y[:, b] = Aᵀ s[:, b]
                e0, e1, e2, e3, e4, e5 = s[0, b], s[1, b], s[2, b], s[3, b], s[4, b], s[5, b]
                for c in range(C):
                    Y[0, b, c] = e0[c] + e1[c] + e2[c] + e3[c] + e4[c]
                    Y[1, b, c] = (e1[c] - e2[c]) + two * (e3[c] - e4[c])
                    Y[2, b, c] = (e1[c] + e2[c]) + four * (e3[c] + e4[c])
                    Y[3, b, c] = (e1[c] - e2[c]) + eight * (e3[c] - e4[c]) + e5[c]
            h0, w0 = 4 * th, 4 * tw
            for a in range(min(4, OH - h0)):
                for b in range(min(4, OW - w0)):
                    out, value = y[n, h0 + a, w0 + b], Y[a, b]
                    for c in range(C):              # each output value is in one tile
                        out[c] = value[c]


@njit(nogil=True, cache=True)
def _output_adjoint_tiles_f4(gy, gM, first, last, TH, TW, k):
    """gM[6·a + b, t] = (A gY_t Aᵀ)[a, b] for the 4×4 tiles gY_t of ``gy`` (N, 4·TH, 4·TW,
    CO), zero past the output, of rows first … last − 1. A's rows, on g = (g0, g1, g2, g3):
    g0, g0 + g1 + g2 + g3, g0 − g1 + g2 − g3, g0 + 2g1 + 4g2 + 8g3, g0 − 2g1 + 4g2 − 8g3, g3."""
    C = gy.shape[3]
    two, four, eight = k[0], k[1], k[3]
    r = np.empty((6, 4, C), dtype=gM.dtype)             # r = A gY, one tile
    for row in range(first, last):
        n, th = row // TH, row % TH
        for tw in range(TW):
            t = row * TW + tw
            h0, w0 = 4 * th, 4 * tw
            for j in range(4):                          # each column of gY
                g0, g1 = gy[n, h0, w0 + j], gy[n, h0 + 1, w0 + j]
                g2, g3 = gy[n, h0 + 2, w0 + j], gy[n, h0 + 3, w0 + j]
                for c in range(C):
                    r[0, j, c] = g0[c]
                    r[1, j, c] = g0[c] + g1[c] + g2[c] + g3[c]
                    r[2, j, c] = g0[c] - g1[c] + g2[c] - g3[c]
                    r[3, j, c] = g0[c] + two * g1[c] + four * g2[c] + eight * g3[c]
                    r[4, j, c] = g0[c] - two * g1[c] + four * g2[c] - eight * g3[c]
                    r[5, j, c] = g3[c]
            for a in range(6):                          # each row of r: gM[a, :] = A r[a, :]
                e0, e1, e2, e3 = r[a, 0], r[a, 1], r[a, 2], r[a, 3]
                m0, m1, m2 = gM[6 * a, t], gM[6 * a + 1, t], gM[6 * a + 2, t]
                m3, m4, m5 = gM[6 * a + 3, t], gM[6 * a + 4, t], gM[6 * a + 5, t]
                for c in range(C):
                    m0[c] = e0[c]
                    m1[c] = e0[c] + e1[c] + e2[c] + e3[c]
                    m2[c] = e0[c] - e1[c] + e2[c] - e3[c]
                    m3[c] = e0[c] + two * e1[c] + four * e2[c] + eight * e3[c]
                    m4[c] = e0[c] - two * e1[c] + four * e2[c] - eight * e3[c]
                    m5[c] = e3[c]


def _constants(dtype):
    return np.array([2, 4, 5, 8], dtype=dtype)


def _zero_padded(image, height, width, top, left):
    """``image`` (N, H, W, C) inside an (N, height, width, C) array of zeros at (top, left).
    Only the border is zeroed: the inside is written once, by the copy."""
    N, H, W, C = image.shape
    padded = np.empty((N, height, width, C), dtype=image.dtype)
    padded[:, :top] = 0
    padded[:, top + H:] = 0
    padded[:, top:top + H, :left] = 0
    padded[:, top:top + H, left + W:] = 0
    padded[:, top:top + H, left:left + W] = image
    return padded


def _input_transform_f4(x, tiling):
    t = tiling
    # 4·TH + 2 ≥ OH + 2 = H + 2·PH: the image and its padding always fit
    padded = _zero_padded(x, 4 * t.TH + 2, 4 * t.TW + 2, t.PH, t.PW)
    V = np.empty((36, t.T, t.C), dtype=x.dtype)
    k = _constants(x.dtype)
    over_blocks(lambda first, last: _input_tiles_f4(padded, V, first, last, t.TH, t.TW, k),
                t.N * t.TH, t.TW * 36 * 12 * t.C)
    return V


def _output_transform_f4(M, tiling, out):
    t = tiling
    y = np.empty((t.N, t.OH, t.OW, M.shape[2]), dtype=M.dtype) if out is None else out
    M, k = np.ascontiguousarray(M), _constants(M.dtype)
    over_blocks(lambda first, last: _output_tiles_f4(M, y, first, last, t.TH, t.TW, k),
                t.N * t.TH, t.TW * 36 * 8 * M.shape[2])
    return y


def _output_transform_adjoint_f4(gy, tiling):
    t = tiling
    if (t.OH, t.OW) == (4 * t.TH, 4 * t.TW):      # the tiles cover the output exactly
        padded = np.ascontiguousarray(gy)
    else:
        padded = _zero_padded(gy, 4 * t.TH, 4 * t.TW, 0, 0)
    gM = np.empty((36, t.T, gy.shape[3]), dtype=gy.dtype)
    k = _constants(gy.dtype)
    over_blocks(lambda first, last: _output_adjoint_tiles_f4(padded, gM, first, last, t.TH,
                                                             t.TW, k),
                t.N * t.TH, t.TW * 36 * 8 * gy.shape[3])
    return gM


def _zeroed(out, shape, dtype):
    """A zeroed array for a kernel that adds tiles into it: ``out``, cleared, if given."""
    if out is None:
        return np.zeros(shape, dtype=dtype)
    out[...] = 0
    return out


def input_transform_numba(x, tiling):
    t = tiling
    if t.m == 4:
        return _input_transform_f4(x, t)          # (its padded copy makes x contiguous)
    V = np.empty((t.alpha ** 2, t.T, t.C), dtype=x.dtype)
    _gather_numba(x, t.BT, t.m, -t.PH, -t.PW, t.TH, t.TW, V)
    return V


def input_transform_adjoint_numba(gV, tiling, out=None):
    """``out``, if given, is a contiguous (N, H, W, C) array to write into."""
    t = tiling
    gx = _zeroed(out, (t.N, t.H, t.W, gV.shape[2]), gV.dtype)       # tiles are added into it
    _scatter_numba(gV, np.ascontiguousarray(t.BT.T), t.m, -t.PH, -t.PW, t.TH, t.TW, gx)
    return gx


def output_transform_numba(M, tiling, out=None):
    """``out``, if given, is a contiguous (N, OH, OW, CO) array to write into."""
    t = tiling
    if t.m == 4:
        return _output_transform_f4(M, t, out)
    y = _zeroed(out, (t.N, t.OH, t.OW, M.shape[2]), M.dtype)
    _scatter_numba(M, t.AT, t.m, 0, 0, t.TH, t.TW, y)
    return y


def output_transform_adjoint_numba(gy, tiling):
    t = tiling
    if t.m == 4:
        return _output_transform_adjoint_f4(gy, t)
    gM = np.empty((t.alpha ** 2, t.T, gy.shape[3]), dtype=gy.dtype)
    _gather_numba(np.ascontiguousarray(gy), np.ascontiguousarray(t.AT.T), t.m, 0, 0, t.TH, t.TW, gM)
    return gM


# ----------------------------------------------------------------------------- registry
# No CUDA versions: the references are written with ``xp`` and run on CuPy arrays as they
# are, which is what a forced Winograd convolution on the GPU uses (the chooser never picks
# Winograd there: cuBLAS's im2col GEMM is the GPU's path). ``out`` (the adjoint of the
# input transform and the output transform): an array to write the result into, so that
# a sub-batch writes straight into the batch's array.

#: x (N, H, W, C) -> V (α², T, C)
input_transform = register_kernel("winograd_input_transform", input_transform_reference,
                                  numba=input_transform_numba)
#: gV (α², T, C) -> gx (N, H, W, C), written into ``out`` if given
input_transform_adjoint = register_kernel("winograd_input_transform_adjoint",
                                          input_transform_adjoint_reference,
                                          numba=input_transform_adjoint_numba)
#: M (α², T, CO) -> y (N, OH, OW, CO), written into ``out`` if given
output_transform = register_kernel("winograd_output_transform", output_transform_reference,
                                   numba=output_transform_numba)
#: gy (N, OH, OW, CO) -> gM (α², T, CO)
output_transform_adjoint = register_kernel("winograd_output_transform_adjoint",
                                           output_transform_adjoint_reference,
                                           numba=output_transform_adjoint_numba)
