"""Environment matrix rows of DeePMD-kit (se_e2_a) and the chain rule back to pair vectors.

Pure functions of the pair vectors ``x_ij = r_j - r_i``. DeePMD-kit's row is
``R = w(r) * [1/rho, x/rho^2, y/rho^2, z/rho^2]`` with ``rho = r + protection`` and the smooth
switch ``w`` going from 1 at ``rcut_smth`` to 0 at ``rcut``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def switch(r: np.ndarray, rcut_smth: float, rcut: float):
    """Return the switch w(r) and dw/dr (quintic in u, C2 at both ends)."""
    u = np.clip((r - rcut_smth) / (rcut - rcut_smth), 0.0, 1.0)
    u2 = u * u
    w = u2 * u * (-6.0 * u2 + 15.0 * u - 10.0) + 1.0
    dw = (-30.0 * u2 * u2 + 60.0 * u2 * u - 30.0 * u2) / (rcut - rcut_smth)
    inside = (r > rcut_smth) & (r < rcut)
    return w, np.where(inside, dw, 0.0)


@dataclass(frozen=True)
class EnvRows:
    """Raw rows and what the backward pass needs (all per pair)."""

    rows: np.ndarray  # (npair, 4)
    vec: np.ndarray  # (npair, 3)
    r: np.ndarray
    rho: np.ndarray
    w: np.ndarray
    dw: np.ndarray


def env_rows(vec: np.ndarray, rcut_smth: float, rcut: float, protection: float = 0.0) -> EnvRows:
    """Raw (unnormalised) environment-matrix rows of the pairs."""
    r = np.sqrt(np.einsum("pi,pi->p", vec, vec))
    w, dw = switch(r, rcut_smth, rcut)
    rho = r + protection
    rows = np.empty((len(r), 4))
    rows[:, 0] = w / rho
    rows[:, 1:] = vec * (w / (rho * rho))[:, None]
    return EnvRows(rows=rows, vec=vec, r=r, rho=rho, w=w, dw=dw)


def rows_to_vector_gradient(env: EnvRows, g_rows: np.ndarray) -> np.ndarray:
    """Chain dE/dR (npair, 4) to dE/dx_ij (npair, 3)."""
    r, rho, w, dw, vec = env.r, env.rho, env.w, env.dw, env.vec
    unit = vec / r[:, None]
    g0 = g_rows[:, 0]
    gv = g_rows[:, 1:]
    radial = g0 * (dw / rho - w / (rho * rho)) + np.einsum("pi,pi->p", gv, vec) * (
        dw / (rho * rho) - 2.0 * w / (rho * rho * rho)
    )
    return unit * radial[:, None] + gv * (w / (rho * rho))[:, None]
