"""Activation functions of DeePMD-kit networks with their first and second derivatives.

All take the pre-activation ``x`` and return arrays of the same shape. gelu is the tanh
approximation, as in every DeePMD-kit backend.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedModelError

_SQRT_2_OVER_PI = np.sqrt(2.0 / np.pi)
_GELU_C = 0.044715


def _tanh(x):
    y = np.tanh(x)
    d1 = 1.0 - y * y
    return y, d1, -2.0 * y * d1


def _gelu(x):
    u = _SQRT_2_OVER_PI * (x + _GELU_C * x**3)
    t = np.tanh(u)
    du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_C * x * x)
    sech2 = 1.0 - t * t
    y = 0.5 * x * (1.0 + t)
    d1 = 0.5 * x * sech2 * du + 0.5 * t + 0.5
    d2 = 3.0 * _GELU_C * _SQRT_2_OVER_PI * x * x * sech2 - x * t * sech2 * du * du + sech2 * du
    return y, d1, d2


def _relu(x):
    y = np.maximum(x, 0.0)
    return y, (x > 0).astype(x.dtype), np.zeros_like(x)


def _relu6(x):
    y = np.minimum(np.maximum(x, 0.0), 6.0)
    return y, ((x > 0) & (x < 6)).astype(x.dtype), np.zeros_like(x)


def _sigmoid_of(x):
    # split by sign so that exp never overflows
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def _softplus(x):
    y = np.logaddexp(0.0, x)
    s = _sigmoid_of(x)
    return y, s, s * (1.0 - s)


def _sigmoid(x):
    y = _sigmoid_of(x)
    d1 = y * (1.0 - y)
    return y, d1, d1 * (1.0 - 2.0 * y)


def _linear(x):
    return x, np.ones_like(x), np.zeros_like(x)


_ACTIVATIONS = {
    "tanh": _tanh,
    "gelu": _gelu,
    "gelu_tf": _gelu,
    "relu": _relu,
    "relu6": _relu6,
    "softplus": _softplus,
    "sigmoid": _sigmoid,
    "linear": _linear,
    "none": _linear,
}

#: activations an embedding net may use for compression (the source document's list)
TABULATABLE = ("tanh", "gelu", "relu", "relu6", "softplus", "sigmoid")
#: activations whose derivative jumps: a quintic across such a kink is wrong
PIECEWISE_LINEAR = ("relu", "relu6")


def canonical_name(name: str | None) -> str:
    """Normalise DeePMD-kit spellings ('None', 'GELU', 'linear') to the names used here."""
    if name is None:
        return "none"
    key = str(name).lower()
    return "none" if key in ("none", "linear", "") else key


def check_activation(name: str, where: str) -> str:
    """Return the canonical activation name or raise naming the supported list."""
    key = canonical_name(name)
    if key not in _ACTIVATIONS:
        raise UnsupportedModelError(
            f"{where}: activation_function {name!r} is not supported; supported: "
            + ", ".join(TABULATABLE)
        )
    return key


def activation_with_derivatives(name: str, x: np.ndarray):
    """Return (phi(x), phi'(x), phi''(x))."""
    return _ACTIVATIONS[name](x)


def activation(name: str, x: np.ndarray) -> np.ndarray:
    """Return phi(x) only."""
    if name == "tanh":
        return np.tanh(x)
    if name == "none":
        return x
    return _ACTIVATIONS[name](x)[0]
