"""DeePMD-kit dense networks: forward passes, input derivatives and the fitting-net gradient.

A layer computes ``z = phi(x W + b)``, times ``idt`` when present, plus a shortcut: ``x`` when
the width is unchanged, ``[x, x]`` when it doubles (only for layers flagged ``resnet``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .activations import activation, activation_with_derivatives


@dataclass(frozen=True)
class Layer:
    """One dense layer; ``w`` has shape (n_in, n_out)."""

    w: np.ndarray
    b: np.ndarray
    idt: np.ndarray | None
    activation: str
    resnet: bool

    @property
    def n_in(self) -> int:
        return self.w.shape[0]

    @property
    def n_out(self) -> int:
        return self.w.shape[1]

    @property
    def shortcut(self) -> int:
        """0: none, 1: identity, 2: input repeated twice."""
        if not self.resnet:
            return 0
        if self.n_out == self.n_in:
            return 1
        if self.n_out == 2 * self.n_in:
            return 2
        return 0


def _apply_shortcut(kind: int, x: np.ndarray) -> np.ndarray | None:
    if kind == 1:
        return x
    if kind == 2:
        return np.concatenate([x, x], axis=-1)
    return None


@dataclass(frozen=True)
class Network:
    """A stack of layers (embedding net or fitting net)."""

    layers: tuple[Layer, ...]

    @property
    def n_out(self) -> int:
        return self.layers[-1].n_out

    @property
    def n_in(self) -> int:
        return self.layers[0].n_in

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            z = activation(layer.activation, x @ layer.w + layer.b)
            if layer.idt is not None:
                z = z * layer.idt
            s = _apply_shortcut(layer.shortcut, x)
            x = z if s is None else z + s
        return x

    def value_and_input_derivatives(self, x: np.ndarray):
        """For a scalar-input net, return G(x), dG/dx and d2G/dx2, each of shape (n, n_out).

        Forward-mode propagation of the first and second derivative through every layer;
        used both for tabulation (node values) and for exact evaluation of the net.
        """
        y = np.asarray(x, dtype=np.float64).reshape(-1, 1)
        dy = np.ones_like(y)
        d2y = np.zeros_like(y)
        for layer in self.layers:
            pre = y @ layer.w + layer.b
            a1 = dy @ layer.w
            a2 = d2y @ layer.w
            f, f1, f2 = activation_with_derivatives(layer.activation, pre)
            z, dz, d2z = f, f1 * a1, f1 * a2 + f2 * a1 * a1
            if layer.idt is not None:
                z, dz, d2z = z * layer.idt, dz * layer.idt, d2z * layer.idt
            kind = layer.shortcut
            if kind:
                z = z + _apply_shortcut(kind, y)
                dz = dz + _apply_shortcut(kind, dy)
                d2z = d2z + _apply_shortcut(kind, d2y)
            y, dy, d2y = z, dz, d2z
        return y, dy, d2y

    def value_and_first_derivative(self, x: np.ndarray):
        """G(x) and dG/dx for a scalar-input net (cheaper than the second-order version).

        tanh in place and without the second derivative the activation functions also return: the same
        values, bit for bit, in ~60 % of the time (the exact nets of uncompressed models run here per pair)."""
        y = np.asarray(x, dtype=np.float64).reshape(-1, 1)
        dy = np.ones_like(y)
        for layer in self.layers:
            pre = y @ layer.w
            pre += layer.b
            a1 = dy @ layer.w
            if layer.activation == "tanh":
                z = np.tanh(pre, out=pre)
                dz = z * z
                np.subtract(1.0, dz, out=dz)
                dz *= a1
            else:
                f, f1, _ = activation_with_derivatives(layer.activation, pre)
                z, dz = f, f1 * a1
            if layer.idt is not None:
                z, dz = z * layer.idt, dz * layer.idt
            kind = layer.shortcut
            if kind:
                z = z + _apply_shortcut(kind, y)
                dz = dz + _apply_shortcut(kind, dy)
            y, dy = z, dz
        return y, dy

    def value_and_gradient(self, x: np.ndarray):
        """Forward pass on rows of ``x`` and the gradient of sum(output) with respect to ``x``.

        Used for the fitting net: output (n, 1), gradient (n, n_in).
        """
        cache = []
        for layer in self.layers:
            pre = x @ layer.w + layer.b
            f, f1, _ = activation_with_derivatives(layer.activation, pre)
            z = f if layer.idt is None else f * layer.idt
            s = _apply_shortcut(layer.shortcut, x)
            cache.append(f1 if layer.idt is None else f1 * layer.idt)
            x = z if s is None else z + s
        out = x
        grad = np.ones_like(out)
        for layer, f1 in zip(reversed(self.layers), reversed(cache)):
            g_pre = grad * f1
            g_in = g_pre @ layer.w.T
            kind = layer.shortcut
            if kind == 1:
                g_in = g_in + grad
            elif kind == 2:
                half = layer.n_in
                g_in = g_in + grad[:, :half] + grad[:, half:]
            grad = g_in
        return out, grad


def fold_type_columns(w: np.ndarray, b: np.ndarray, te: np.ndarray, ntypes: int, one_side: bool):
    """A first layer reading ``[s, tebd[tj](, tebd[ti])]`` as one scalar-input layer per type key.

    For a fixed (centre, neighbour) type the type-embedding columns only add a constant to the
    pre-activation, so they move into the bias. Yields ``(key, w_s, bias)`` with key ``(tj,)``
    (``one_side``) or ``(ti, tj)``; used for DPA-1's concat mode and TF's se_e2_a + type embedding.
    """
    dim = te.shape[1]
    w_s, w_j, w_i = w[:1], w[1:1 + dim], w[1 + dim:]
    for ti in range(1 if one_side else ntypes):
        for tj in range(ntypes):
            bias = b + te[tj] @ w_j + (0.0 if one_side else te[ti] @ w_i)
            yield ((tj,) if one_side else (ti, tj)), w_s.copy(), bias
