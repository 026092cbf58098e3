"""Anchors: the fixed boxes every prediction of a detector is made relative to.

EfficientDet (Tan, Pang & Le 2020, §3 and the official configuration) puts anchors on the
feature levels P3 … P7, whose strides are 2³ … 2⁷ pixels. At every position of level l
sit 9 anchors: 3 octave scales × 3 aspect ratios, each centred on its cell::

    stride      s = 2^l
    centres     x = s/2, 3s/2, 5s/2, ...  (and so for y), one per feature-map cell
    base size   b = anchor_scale · s · 2^(o/3),  octave o ∈ {0, 1, 2}  (anchor_scale = 4)
    size        (w, h) = (b·ax, b·ay),  aspect (ax, ay) ∈ {(1, 1), (1.4, 0.7), (0.7, 1.4)}

so a P3 anchor is 32 px across and a P7 anchor 512 px.

Anchor order (the network's outputs must follow it)
---------------------------------------------------
Level-major (P3 first), then row y, then column x, then the 9 anchors of the cell with
the octave scale major and the aspect ratio minor (anchor k = 3·o + r). This is what
flattening an NHWC map of 9·C channels gives, channel = k·C + c — see
``minicnn.detection.flatten_level_outputs``. For D0 at 512×512::

    (64² + 32² + 16² + 8² + 4²) · 9 = 5456 · 9 = 49,104 anchors.
"""
import numpy as np

MIN_LEVEL, MAX_LEVEL = 3, 7
OCTAVE_SCALES = (0.0, 1.0 / 3.0, 2.0 / 3.0)          # exponents o/3 of 2
ASPECT_RATIOS = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4))  # (width factor, height factor)
ANCHOR_SCALE = 4.0
ANCHORS_PER_CELL = len(OCTAVE_SCALES) * len(ASPECT_RATIOS)


def image_shape(image_size):
    """(height, width) from an int or an (h, w) pair."""
    if isinstance(image_size, (int, np.integer)):
        return int(image_size), int(image_size)
    height, width = image_size
    return int(height), int(width)


def check_image_size(image_size, max_level=MAX_LEVEL):
    """A ValueError unless both sides are positive multiples of the coarsest stride 2^max_level.

    Every level then has whole cells (the network halves the map max_level times); the
    minimum canvas is one cell of the coarsest level: 128 px for P7.
    """
    height, width = image_shape(image_size)
    stride = 2 ** max_level
    if height < stride or width < stride or height % stride or width % stride:
        raise ValueError(f"image size {height}×{width}: a detector with levels up to P{max_level} "
                         f"needs sides that are multiples of its stride {stride} (minimum "
                         f"{stride}×{stride}), e.g. {max(stride, -(-height // stride) * stride)}")
    return height, width


def feature_shapes(image_size, min_level=MIN_LEVEL, max_level=MAX_LEVEL):
    """[(height, width)] of levels min_level … max_level: the image size over 2^l."""
    height, width = check_image_size(image_size, max_level)
    return [(height >> level, width >> level) for level in range(min_level, max_level + 1)]


def cell_anchor_sizes(stride, anchor_scale=ANCHOR_SCALE):
    """(9, 2) widths and heights of one cell's anchors, in the documented order."""
    sizes = []
    for octave in OCTAVE_SCALES:
        base = anchor_scale * stride * 2.0 ** octave
        for aspect_x, aspect_y in ASPECT_RATIOS:
            sizes.append((base * aspect_x, base * aspect_y))
    return np.array(sizes)


def generate_anchors(image_size, min_level=MIN_LEVEL, max_level=MAX_LEVEL,
                     anchor_scale=ANCHOR_SCALE):
    """All anchors of an image as an (A, 4) float64 array of (x1, y1, x2, y2), in the
    order the module docstring states."""
    per_level = []
    for level, (rows, columns) in zip(range(min_level, max_level + 1),
                                      feature_shapes(image_size, min_level, max_level)):
        stride = 2.0 ** level
        centre_y, centre_x = np.meshgrid((np.arange(rows) + 0.5) * stride,
                                         (np.arange(columns) + 0.5) * stride, indexing="ij")
        centres = np.stack([centre_x, centre_y], axis=-1).reshape(-1, 1, 2)   # (cells, 1, 2)
        half_sizes = cell_anchor_sizes(stride, anchor_scale)[None] / 2          # (1, 9, 2)
        boxes = np.concatenate([centres - half_sizes, centres + half_sizes], axis=-1)
        per_level.append(boxes.reshape(-1, 4))
    return np.concatenate(per_level)


def anchor_count(image_size, min_level=MIN_LEVEL, max_level=MAX_LEVEL):
    """How many anchors ``generate_anchors`` makes: 9 per cell of every level."""
    return ANCHORS_PER_CELL * sum(h * w for h, w in feature_shapes(image_size, min_level,
                                                                  max_level))
