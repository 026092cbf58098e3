"""Arithmetic, reductions and matrix products: forward and backward side by side.

Notation in the docstrings: ``y`` is the output, ``gy`` = ∂L/∂y the gradient arriving
from above, ``gx`` = ∂L/∂x the gradient each backward returns.
"""
from minicnn.backend import get_array_module, sum_rows
from minicnn.kernels.threads import gemm
from minicnn.tensor import Function, Tensor, as_tensor, sum_to


def _check_float(name, *arrays):
    for a in arrays:
        if a.dtype.kind != "f":
            raise TypeError(f"{name}: expected floating-point input, got dtype {a.dtype}")


def _check_same_device(name, *arrays):
    modules = {type(a).__module__.split(".")[0] for a in arrays}
    if len(modules) > 1:
        raise ValueError(f"{name}: inputs live on different devices "
                         f"({', '.join(sorted(modules))}); move them with .to(device)")


def _check_broadcastable(name, a, b):
    _check_same_device(name, a, b)
    for m, n in zip(reversed(a.shape), reversed(b.shape)):
        if m != n and m != 1 and n != 1:
            raise ValueError(f"{name}: shapes {a.shape} and {b.shape} cannot be broadcast "
                             f"together")


# ----------------------------------------------------------------------------- binary

class Add(Function):
    """y = a + b;   ga = gy, gb = gy (each summed back to its operand's shape)."""
    def forward(self, a, b):
        _check_broadcastable("add", a, b)
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, gy):
        return sum_to(gy, self.shapes[0]), sum_to(gy, self.shapes[1])


class Sub(Function):
    """y = a - b;   ga = gy, gb = -gy."""
    def forward(self, a, b):
        _check_broadcastable("sub", a, b)
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, gy):
        return sum_to(gy, self.shapes[0]), sum_to(-gy, self.shapes[1])


class Mul(Function):
    """y = a · b;   ga = gy · b, gb = gy · a."""
    def forward(self, a, b):
        _check_broadcastable("mul", a, b)
        self.save_for_backward(a, b)
        return a * b

    def backward(self, gy):
        a, b = self.saved
        ga = sum_to(gy * b, a.shape) if self.needs_input_grad[0] else None
        gb = sum_to(gy * a, b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    """y = a / b;   ga = gy / b, gb = -gy · a / b²."""
    def forward(self, a, b):
        _check_broadcastable("div", a, b)
        self.save_for_backward(a, b)
        return a / b

    def backward(self, gy):
        a, b = self.saved
        ga = sum_to(gy / b, a.shape) if self.needs_input_grad[0] else None
        gb = sum_to(-gy * a / (b * b), b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Maximum(Function):
    """y = max(a, b) elementwise;   the gradient goes to the larger (to ``a`` on ties)."""
    def forward(self, a, b):
        _check_broadcastable("maximum", a, b)
        self.shapes = a.shape, b.shape
        if self.records:
            self.save_for_backward(a >= b)
        return get_array_module(a).maximum(a, b)

    def backward(self, gy):
        xp = get_array_module(gy)
        a_wins, = self.saved
        return (sum_to(xp.where(a_wins, gy, 0), self.shapes[0]),
                sum_to(xp.where(a_wins, 0, gy), self.shapes[1]))


class Where(Function):
    """y = a where condition else b;   ga = gy where condition, gb = gy elsewhere.

    The boolean ``condition`` is an input without a gradient (it gets ``None``).
    """
    def forward(self, condition, a, b):
        self.shapes = a.shape, b.shape
        self.save_for_backward(condition)
        return get_array_module(a).where(condition, a, b)

    def backward(self, gy):
        xp = get_array_module(gy)
        condition, = self.saved
        return (None, sum_to(xp.where(condition, gy, 0), self.shapes[0]),
                sum_to(xp.where(condition, 0, gy), self.shapes[1]))


class MatMul(Function):
    """Y = A @ B (batched over leading axes, broadcast as NumPy does).

    gA = gY @ Bᵀ,  gB = Aᵀ @ gY  (transposing the last two axes; summed over broadcast
    batch axes). 1-D operands are promoted as in NumPy and the gradient reshaped back.
    """
    def forward(self, a, b):
        _check_same_device("matmul", a, b)
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul: operands must have at least 1 dimension, got shapes "
                             f"{a.shape} and {b.shape}")
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ValueError(f"matmul: inner dimensions differ: {a.shape} @ {b.shape} "
                             f"(expected a.shape[-1] == b.shape[-2])")
        batch_a, batch_b = a.shape[:-2], b.shape[:-2]
        if any(m != n and 1 not in (m, n) for m, n in zip(batch_a[::-1], batch_b[::-1])):
            raise ValueError(f"matmul: batch shapes {batch_a} and {batch_b} cannot be broadcast "
                             f"together ({a.shape} @ {b.shape})")
        self.save_for_backward(a, b)
        return a @ b

    def backward(self, gy):
        a, b = self.saved
        a2 = a[None, :] if a.ndim == 1 else a           # promote vectors to matrices
        b2 = b[:, None] if b.ndim == 1 else b
        gy2 = gy[..., None] if b.ndim == 1 else gy      # put back the axes NumPy dropped
        gy2 = gy2[..., None, :] if a.ndim == 1 else gy2
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = sum_to(gy2 @ b2.swapaxes(-1, -2), a2.shape).reshape(a.shape)
        if self.needs_input_grad[1]:
            gb = sum_to(a2.swapaxes(-1, -2) @ gy2, b2.shape).reshape(b.shape)
        return ga, gb


class Linear(Function):
    """y = x Wᵀ + b over the last axis of x; W is (out_features, in_features).

    gx = gy W,   gW = gyᵀ x,   gb = Σ_rows gy      (x and gy flattened to matrices)

    One Function rather than matmul(x, transpose(W)): its weight gradient comes out of the
    GEMM in W's own (out, in) layout, where the composed version hands back a transposed
    view, which optimizers cannot stream through in one pass (AlexNet's fc6: 38M weights).
    """
    def forward(self, x, weight, bias=None):
        _check_same_device("linear", x, weight)
        if x.ndim < 1 or weight.ndim != 2 or x.shape[-1] != weight.shape[1]:
            raise ValueError(f"linear: expected input (..., {weight.shape[-1]}) for weight of "
                             f"shape {weight.shape}, got input shape {x.shape}")
        if bias is not None and bias.shape != (weight.shape[0],):
            raise ValueError(f"linear: bias must have shape ({weight.shape[0]},), got {bias.shape}")
        self.has_bias = bias is not None
        self.save_for_backward(x, weight)
        y = gemm(x.reshape(-1, x.shape[-1]), weight.T)
        if bias is not None:
            y += bias
        return y.reshape(x.shape[:-1] + (weight.shape[0],))

    def backward(self, gy):
        x, weight = self.saved
        gy2 = gy.reshape(-1, weight.shape[0])
        gx = gemm(gy2, weight).reshape(x.shape) if self.needs_input_grad[0] else None
        gw = gemm(gy2.T, x.reshape(-1, x.shape[-1])) if self.needs_input_grad[1] else None
        if not self.has_bias:
            return gx, gw
        return gx, gw, (sum_rows(gy2) if self.needs_input_grad[2] else None)


# ----------------------------------------------------------------------------- unary

class Neg(Function):
    """y = -x;   gx = -gy."""
    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


class Pow(Function):
    """y = xᵖ (p a constant);   gx = gy · p · xᵖ⁻¹."""
    def __init__(self, exponent):
        self.exponent = exponent

    def forward(self, x):
        self.save_for_backward(x)
        return x ** self.exponent

    def backward(self, gy):
        x, = self.saved
        p = self.exponent
        return gy * p * x ** (p - 1)


class Exp(Function):
    """y = eˣ;   gx = gy · y."""
    def forward(self, x):
        _check_float("exp", x)
        y = get_array_module(x).exp(x)
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        y, = self.saved
        return gy * y


class Log(Function):
    """y = ln x;   gx = gy / x."""
    def forward(self, x):
        _check_float("log", x)
        self.save_for_backward(x)
        return get_array_module(x).log(x)

    def backward(self, gy):
        x, = self.saved
        return gy / x


class Sqrt(Function):
    """y = √x;   gx = gy / (2√x)."""
    def forward(self, x):
        _check_float("sqrt", x)
        y = get_array_module(x).sqrt(x)
        self.save_for_backward(y)
        return y

    def backward(self, gy):
        y, = self.saved
        return gy / (2 * y)


class Clip(Function):
    """y = min(max(x, low), high);   gx = gy inside [low, high], 0 outside."""
    def __init__(self, low, high):
        self.low, self.high = low, high

    def forward(self, x):
        if self.records:
            self.save_for_backward((x >= self.low) & (x <= self.high))
        return get_array_module(x).clip(x, self.low, self.high)

    def backward(self, gy):
        inside, = self.saved
        return gy * inside


class Cast(Function):
    """y = x converted to ``dtype``;   gx = gy converted back."""
    def __init__(self, dtype):
        self.dtype = dtype

    def forward(self, x):
        self.source_dtype = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy):
        return gy.astype(self.source_dtype)


# ----------------------------------------------------------------------------- reductions

def _normalize_axis(axis, ndim, name):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"{name}: axis {a} is out of range for a tensor with {ndim} "
                             f"dimensions")
    return tuple(sorted(a % ndim for a in axes))


def _expand(gy, shape, axes, keepdims):
    """Re-insert reduced axes (size 1) so ``gy`` broadcasts against the input."""
    if not keepdims:
        gy = gy.reshape([1 if i in axes else n for i, n in enumerate(shape)])
    return gy


class Sum(Function):
    """y = Σ_axes x;   gx = gy broadcast back over the summed axes."""
    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.shape, self.axes = x.shape, _normalize_axis(self.axis, x.ndim, "sum")
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        xp = get_array_module(gy)
        return xp.broadcast_to(_expand(gy, self.shape, self.axes, self.keepdims), self.shape)


class Mean(Function):
    """y = (1/n) Σ_axes x;   gx = gy / n broadcast back (n = elements averaged)."""
    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        _check_float("mean", x)
        self.shape, self.axes = x.shape, _normalize_axis(self.axis, x.ndim, "mean")
        self.count = 1
        for a in self.axes:
            self.count *= x.shape[a]
        return x.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        xp = get_array_module(gy)
        gy = _expand(gy, self.shape, self.axes, self.keepdims) / self.count
        return xp.broadcast_to(gy, self.shape)


class Max(Function):
    """y = max_axes x;   gx = gy at the maximum, 0 elsewhere (ties share it equally)."""
    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.axes = _normalize_axis(self.axis, x.ndim, "max")
        y = x.max(axis=self.axes, keepdims=True)
        self.save_for_backward(x, y)
        return y if self.keepdims else y.reshape(
            [n for i, n in enumerate(x.shape) if i not in self.axes])

    def backward(self, gy):
        x, y = self.saved
        is_max = x == y
        ties = is_max.sum(axis=self.axes, keepdims=True)
        ties = ties.astype(gy.dtype)  # int64 counts would promote float32 gradients to float64
        return _expand(gy, x.shape, self.axes, self.keepdims) * is_max / ties


class Var(Function):
    """y = (1/(n - ddof)) Σ (x - x̄)²;   gx = gy · 2 (x - x̄) / (n - ddof)."""
    def __init__(self, axis=None, keepdims=False, ddof=0):
        self.axis, self.keepdims, self.ddof = axis, keepdims, ddof

    def forward(self, x):
        _check_float("var", x)
        self.axes = _normalize_axis(self.axis, x.ndim, "var")
        self.shape = x.shape
        count = 1
        for a in self.axes:
            count *= x.shape[a]
        self.divisor = count - self.ddof
        centered = x - x.mean(axis=self.axes, keepdims=True)
        self.save_for_backward(centered)
        return (centered ** 2).sum(axis=self.axes, keepdims=self.keepdims) / self.divisor

    def backward(self, gy):
        centered, = self.saved
        gy = _expand(gy, self.shape, self.axes, self.keepdims)
        return gy * 2 * centered / self.divisor


# ----------------------------------------------------------------------------- public API

def _pair(a, b):
    """Make both operands tensors; a Python number takes the other's dtype and device."""
    if isinstance(a, Tensor):
        return a, as_tensor(b, like=a)
    return as_tensor(a, like=b if isinstance(b, Tensor) else None), as_tensor(b)


def add(a, b): return Add()(*_pair(a, b))
def sub(a, b): return Sub()(*_pair(a, b))
def mul(a, b): return Mul()(*_pair(a, b))
def div(a, b): return Div()(*_pair(a, b))
def maximum(a, b): return Maximum()(*_pair(a, b))
def neg(x): return Neg()(x)
def exp(x): return Exp()(x)
def log(x): return Log()(x)
def sqrt(x): return Sqrt()(x)
def clip(x, low, high): return Clip(low, high)(x)
def cast(x, dtype): return Cast(dtype)(x)


def pow(x, exponent):
    if isinstance(exponent, Tensor):
        raise TypeError("pow: the exponent must be a Python number, got a Tensor")
    return Pow(exponent)(x)


def matmul(a, b):
    return MatMul()(*_pair(a, b))


def linear(x, weight, bias=None):
    """``x @ weight.T + bias`` as one Function (see ``Linear``)."""
    return Linear()(x, weight) if bias is None else Linear()(x, weight, bias)


def where(condition, a, b):
    """Elementwise ``a if condition else b``; ``condition`` is a boolean array or Tensor."""
    condition = condition.data if isinstance(condition, Tensor) else condition
    return Where()(Tensor(condition), *_pair(a, b))


def sum(x, axis=None, keepdims=False): return Sum(axis, keepdims)(x)
def mean(x, axis=None, keepdims=False): return Mean(axis, keepdims)(x)
def max(x, axis=None, keepdims=False): return Max(axis, keepdims)(x)
def var(x, axis=None, keepdims=False, ddof=0): return Var(axis, keepdims, ddof)(x)
