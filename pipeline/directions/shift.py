"""Moving latents along a direction: w + α·σ·d, with α in units of the spread of W along d."""

from __future__ import annotations

import numpy as np


def latent_sigma(w_samples: np.ndarray, d: np.ndarray) -> float:
    """Standard deviation of the latents' projections onto the unit direction ``d``."""
    return float(np.std(w_samples @ d))


def shift_latents(w: np.ndarray, d: np.ndarray, alphas: np.ndarray, sigma: float) -> np.ndarray:
    """Latents [N, D] or W+ [N, L, D] → shifted [N, A, D] or [N, A, L, D] (every layer
    moves by the same vector, so a W latent stays in W)."""
    alphas = np.asarray(alphas, dtype=w.dtype)
    step = (alphas * sigma)[:, None] * d[None, :].astype(w.dtype)  # [A, D]
    if w.ndim == 2:
        return w[:, None, :] + step[None]
    return w[:, None, :, :] + step[None, :, None, :]


def project_out(d: np.ndarray, others: list[np.ndarray]) -> np.ndarray:
    """``d`` with the span of ``others`` removed, renormalised (InterFaceGAN's conditional
    manipulation): moving along it leaves the other attributes' linear scores unchanged."""
    if not others:
        return d
    q, _ = np.linalg.qr(np.stack(others, axis=1))  # orthonormal basis [D, K]
    r = d - q @ (q.T @ d)
    n = float(np.linalg.norm(r))
    if n < 1e-6:
        raise ValueError("the direction lies in the span of the others")
    return (r / n).astype(np.float32)
