"""The generator's quality bar, measured: do samples look like the tiles in the numbers the
later stages rely on (nuclei, colour), and how far apart are they (SWD)?"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pipeline.features.nuclei import nuclei_table
from pipeline.gan.metrics import fine_detail, layout_correlation, swd

STATS = ("nuclei_density", "mean_nuclear_area_um2", "nuclear_area_fraction", "nuclear_solidity",
         "fine_detail")  # fmt: skip
COLOUR_STATS = ("mean_R", "mean_G", "mean_B")
GREY_STATS = ("intensity_mean", "intensity_std", "local_contrast", "edge_density")
_BAR = (*STATS, *COLOUR_STATS, *GREY_STATS)  # every per-tile statistic the bar compares


def tile_stats(tiles: np.ndarray, mpp: float) -> pd.DataFrame:
    """Per tile the statistics of the bar: RGB tiles ``STATS`` + ``COLOUR_STATS`` (nuclear
    statistics, fine detail, mean of each colour channel); grey tiles ``GREY_STATS``."""
    if tiles.shape[-1] != 3:
        from pipeline.features import compute_features

        return compute_features(tiles, mpp, GREY_STATS, modality="radiology")
    table = nuclei_table(tiles, mpp)
    table["fine_detail"] = fine_detail(tiles)
    colour = tiles.reshape(len(tiles), -1, 3).mean(axis=1)  # [N, 3]
    for k, name in enumerate(COLOUR_STATS):
        table[name] = colour[:, k]
    return table


def compare(real: pd.Series, fake: pd.Series) -> dict[str, Any]:
    """One statistic against the bar: the samples' mean within one SD of the reals' mean
    (``|z| <= 1``) and their SD within a factor 2 of the reals' (``sd_ratio``); NaNs (a tile
    without nuclei has no nuclear size) are skipped."""
    rm, rs, fm, fs = (float(v) for v in (real.mean(), real.std(), fake.mean(), fake.std()))
    z, ratio = (fm - rm) / max(rs, 1e-12), fs / max(rs, 1e-12)
    return {"real_mean": rm, "real_sd": rs, "fake_mean": fm, "fake_sd": fs, "z": z,
            "sd_ratio": ratio, "passed": bool(abs(z) <= 1 and 0.5 <= ratio <= 2)}  # fmt: skip


def _layout_check(reals: np.ndarray, fakes: np.ndarray) -> dict[str, Any]:
    """Samples must not be more alike in layout than the reals (tiles cut at random from
    tissue share none; aligned radiographs share their anatomy)."""
    rl, fl = layout_correlation(reals), layout_correlation(fakes)
    return {"real": rl, "fake": fl, "passed": bool(fl <= rl + 0.1)}


def quality_report(reals: np.ndarray, fakes: np.ndarray, mpp: float, seed: int = 0
                   ) -> dict[str, Any]:  # fmt: skip
    """Compare uint8 [N, H, W, C] reals and samples.

    The bar (``compare``) for each statistic of ``tile_stats``: RGB (histology) the nuclear
    statistics, fine detail and the per-tile mean of each colour channel; grey (radiology,
    C = 1) the radiology features ``GREY_STATS``. Both: the samples' layout correlation at
    most 0.1 above the reals' (no shared arrangement, ``layout_correlation``). Returns the
    figures and ``passed``.
    """
    r, f = tile_stats(reals, mpp), tile_stats(fakes, mpp)
    checks: dict[str, Any] = {c: compare(r[c], f[c]) for c in r.columns if c in _BAR}
    checks["layout_corr"] = _layout_check(reals, fakes)
    return {"n_real": len(reals), "n_fake": len(fakes), "checks": checks,
            "swd": swd(reals, fakes, seed=seed),
            "passed": all(c["passed"] for c in checks.values())}  # fmt: skip


class StatsTracker:
    """The per-tile part of the bar, cheap enough for every metric tick of training: called
    with uint8 samples, returns per statistic of ``tile_stats`` the samples' mean, its
    distance from the reals' mean in reals' SDs (``<stat>_z``; the bar wants |z| <= 1) and
    the ratio of SDs (``<stat>_sd_ratio``; the bar wants 0.5 to 2)."""

    def __init__(self, reals: np.ndarray, mpp: float) -> None:
        self.mpp = mpp
        self.real = tile_stats(reals, mpp)

    def __call__(self, fakes: np.ndarray) -> dict[str, float]:
        fake = tile_stats(fakes, self.mpp)
        out: dict[str, float] = {}
        for c in self.real.columns:
            if c in _BAR:
                cmp = compare(self.real[c], fake[c])
                out[c], out[f"{c}_z"], out[f"{c}_sd_ratio"] = (
                    cmp["fake_mean"], cmp["z"], cmp["sd_ratio"])  # fmt: skip
        return out


RAW_PREFIX = "raw_"  # training metrics of the raw G (not G_ema) carry this prefix


def snapshot_score(metrics: Mapping[str, float], prefix: str = "") -> tuple[float, float] | None:
    """How good a training tick's G_ema is, lower is better; ``None`` without SWD.
    ``prefix=RAW_PREFIX`` scores the raw G from its ``raw_*`` metrics instead.

    First how far the tracked statistics lie outside the bar (``StatsTracker``): the largest
    excess of ``|<stat>_z|`` over 1 or of ``|log2 <stat>_sd_ratio|`` over 1, 0 when all are
    within and without a tracker; then SWD: the snapshot choice of the StyleGAN papers (best
    FID) with the bar the later stages need.
    """
    d = metrics.get(f"{prefix}swd")
    if d is None or not math.isfinite(d):
        return None
    z = [float(metrics[k]) for c in _BAR if (k := f"{prefix}{c}_z") in metrics]
    ratio = [float(metrics[k]) for c in _BAR if (k := f"{prefix}{c}_sd_ratio") in metrics]
    excess = [abs(v) - 1.0 for v in z] + [abs(math.log2(max(v, 1e-12))) - 1.0 for v in ratio]
    if any(not math.isfinite(e) for e in excess):
        return None
    return (max([0.0, *excess]), float(d))


def best_net(metrics: Mapping[str, float]) -> tuple[tuple[float, float], str] | None:
    """The better of a tick's two generators by ``snapshot_score``: ``(score, "G_ema")`` or,
    when the raw G was measured too (``raw_*`` metrics) and scores lower, ``(score, "G")``.
    On short runs G_ema can lag a fast-moving G and average its fine detail away."""
    found = [(s, net) for net, prefix in (("G_ema", ""), ("G", RAW_PREFIX))
             if (s := snapshot_score(metrics, prefix)) is not None]  # fmt: skip
    return min(found, key=lambda f: f[0]) if found else None  # a tie keeps G_ema
