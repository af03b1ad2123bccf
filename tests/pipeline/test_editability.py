"""The editability gate: a shift must act on the inverted tiles as on the samples the
direction was fitted on. The figure on synthetic shift tables, and on the shipped demo
generator with a black box that reads darkness (three seeds): latents drawn from W like the
samples are editable; a W+ fit without a prior moves them out of W, and editability falls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.directions import shift_latents
from pipeline.gan.generator import load_generator
from pipeline.inversion.refine import RefineSettings, refine
from pipeline.reports.verdicts import editability, judge_direction

DEMO_G = Path(__file__).resolve().parents[2] / "models" / "demo_tiny64"
ALPHAS = np.array([-2.0, -1.0, 0.0, 1.0, 2.0], np.float32)


def shifts_table(logits: np.ndarray, direction: str = "d") -> pd.DataFrame:
    """Rows as the analysis writes them from logits [N, A] at ``ALPHAS``."""
    n = len(logits)
    return pd.DataFrame(
        {
            "direction": direction,
            "replicate": 0,
            "tile_id": np.repeat([f"t{i}" for i in range(n)], len(ALPHAS)),
            "slide_id": "s",
            "alpha": np.tile(ALPHAS, n),
            "logit": logits.reshape(-1),
        }
    )


def test_editability_is_the_tiles_slope_over_the_samples() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(20, 1))
    tiles = shifts_table(base + 0.4 * ALPHAS)
    samples = shifts_table(base + 0.8 * ALPHAS)
    assert editability(tiles, samples, "d") == pytest.approx(0.5)
    assert editability(samples, samples, "d") == pytest.approx(1.0)
    assert np.isnan(editability(tiles, shifts_table(base - 0.8 * ALPHAS), "d"))
    assert np.isnan(editability(tiles, samples, "other"))


def test_an_uneditable_inversion_is_not_supported() -> None:
    v, why = judge_direction({"editability": 0.3, "reach": 0.9, "auc": 0.95})
    assert v == "not_supported" and why.startswith("editability 0.3 < 0.5")
    assert judge_direction({"editability": 0.7})[0] == "weak"
    assert judge_direction({"editability": 0.95})[0] == "supported"


def darkness(img: torch.Tensor) -> torch.Tensor:
    """A black box that reads how dark (how much stain) a tile is."""
    return 20 * (1 - img.mean((1, 2, 3)))


def logits_along(gen, w: np.ndarray, d: np.ndarray, sigma: float) -> np.ndarray:
    shifted = shift_latents(w, d, ALPHAS, sigma)
    flat = torch.from_numpy(shifted.reshape(-1, *shifted.shape[2:]))
    with torch.no_grad():
        return darkness(gen.synthesis(flat)).numpy().reshape(len(w), len(ALPHAS))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_drawn_latents_are_editable_and_an_unconstrained_w_plus_fit_loses_it(seed: int) -> None:
    """Latents drawn from W like the samples: editability ≥ 0.8. The same images redrawn
    with random noise (which constant noise cannot reproduce, as a real tile) and fitted in
    W+ with no prior from those very latents: the fit leaves W and the gate sees the loss."""
    gen = load_generator(DEMO_G)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = gen.mapping(torch.randn(1000, gen.z_dim, generator=g))
        y = darkness(gen.synthesis(w)).numpy()
    x = ((w - gen.w_mean) / gen.w_std).numpy()
    coef = np.linalg.solve(x.T @ x + 100 * np.eye(x.shape[1]), x.T @ (y - y.mean()))
    d = coef / gen.w_std.numpy()
    d = (d / np.linalg.norm(d)).astype(np.float32)
    sigma = float(np.std(w.numpy() @ d))
    samples = shifts_table(logits_along(gen, w[:64].numpy(), d, sigma))
    drawn = w[64:96]
    torch.manual_seed(seed)
    with torch.no_grad():
        target = gen.synthesis(drawn, noise_mode="random")
    s = RefineSettings(steps=60, lr=0.1, noise=0.0, feature_weight=0.0)
    fitted = refine(gen, drawn[:, None].expand(-1, gen.num_ws, -1), target, s).w.numpy()
    e_drawn = editability(shifts_table(logits_along(gen, drawn.numpy(), d, sigma)), samples, "d")
    e_fitted = editability(shifts_table(logits_along(gen, fitted, d, sigma)), samples, "d")
    assert e_drawn >= 0.8
    assert e_fitted < e_drawn
