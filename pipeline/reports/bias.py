"""Is the classifier's direction entangled with site, scanner or stain? Cosines between
directions against a permutation null, and how much of the prediction change survives when
the metadata directions are projected out (conditional manipulation, InterFaceGAN).

The null of a cosine is the |cosine| between the classifier direction and metadata
directions refitted on slide-level shuffles of the metadata (within label strata when the
fit is stratified): it keeps W's anisotropy, the slides and the confound, which a formula for
random isotropic directions does not. The conditional direction moves by the original
direction's σ per unit α, so ``survived`` compares equal Euclidean steps: the share of the
logit's slope that is left, with a bootstrap CI over slides and the pipeline's replicates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.directions import Direction

# The sections' columns, also when a section has no rows (no classifier direction could be
# fitted): cohort_bias.parquet keeps one schema for its readers (the report, pandas, duckdb).
COSINE_COLUMNS = [
    "section",
    "direction",
    "other",
    "cosine",
    "abs_cosine",
    "null",
    "null_q95",
    "null_q99",
    "cosine_p",
    "above_null",
]
CONDITIONAL_COLUMNS = [
    "section",
    "direction",
    "other",
    "logit_slope",
    "logit_slope_conditional",
    "survived",
    "survived_ci_low",
    "survived_ci_high",
]


def cosine_rows(
    directions: list[Direction], nulls: dict[tuple[str, str], np.ndarray]
) -> pd.DataFrame:
    """Every classifier direction against every other (not conditional, not random)
    direction: cosine, |cosine|, and where ``nulls`` has the pair's null |cosines| (metadata
    directions: ``permutation_cosines``) its 95th/99th percentiles, the permutation p-value
    and ``above_null`` (|cosine| > the 99th); pairs without a null leave those empty."""
    rows = []
    for a in (d for d in directions if d.kind == "classifier"):
        for b in directions:
            if b.name == a.name or b.kind in ("conditional", "random"):
                continue
            cos = float(np.dot(a.vector, b.vector))
            null = nulls.get((a.name, b.name))
            null = null[np.isfinite(null)] if null is not None else np.zeros(0)
            row = {
                "section": "cosine",
                "direction": a.name,
                "other": b.name,
                "cosine": cos,
                "abs_cosine": abs(cos),
                "null": "none",
                "null_q95": np.nan,
                "null_q99": np.nan,
                "cosine_p": np.nan,
                "above_null": None,
            }
            if len(null):
                q95, q99 = np.quantile(null, [0.95, 0.99])
                row |= {
                    "null": f"permutation ({len(null)})",
                    "null_q95": float(q95),
                    "null_q99": float(q99),
                    "cosine_p": float((1 + (null >= abs(cos)).sum()) / (1 + len(null))),
                    "above_null": bool(abs(cos) > q99),
                }
            rows.append(row)
    return pd.DataFrame(rows, columns=COSINE_COLUMNS)


def tile_logit_slopes(shifts: pd.DataFrame, value: str = "logit") -> pd.DataFrame:
    """Per (direction, replicate, tile): the least-squares slope of ``value`` against α."""
    if "replicate" not in shifts:
        shifts = shifts.assign(replicate=0)
    keys = ["direction", "replicate", "tile_id", "slide_id"]
    d = shifts[[*keys, "alpha", value]]
    g = d.groupby(keys, sort=False)
    xc = d["alpha"] - g["alpha"].transform("mean")
    yc = d[value] - g[value].transform("mean")
    num = (xc * yc).groupby([d[k] for k in keys], sort=False).sum()
    den = (xc**2).groupby([d[k] for k in keys], sort=False).sum()
    return (num / den.where(den > 0)).rename("slope").reset_index()


def prediction_slopes(shifts: pd.DataFrame, value: str = "logit") -> pd.Series:
    """Cohort mean of per-tile slopes of the classifier's ``value`` against α, per direction."""
    return tile_logit_slopes(shifts, value).groupby("direction")["slope"].mean()


def _survived(
    pair: pd.DataFrame, n_boot: int, rng: np.random.Generator
) -> tuple[float, float, float, float, float]:
    """Slopes along the original and conditional direction, their ratio and its bootstrap CI
    (slides resampled; one replicate drawn per resample)."""
    per = pair.groupby(["replicate", "slide_id"])[["orig", "cond"]].sum()
    reps = sorted(per.index.get_level_values(0).unique())
    slides = sorted(per.index.get_level_values(1).unique())
    full = per.reindex(pd.MultiIndex.from_product([reps, slides]), fill_value=0.0)
    o = full["orig"].to_numpy().reshape(len(reps), len(slides))
    c = full["cond"].to_numpy().reshape(len(reps), len(slides))
    s_o, s_c = float(pair["orig"].mean()), float(pair["cond"].mean())
    ratio = s_c / s_o if s_o else np.nan
    lo = hi = np.nan
    if len(slides) >= 2 and s_o:
        idx = rng.integers(0, len(slides), size=(n_boot, len(slides)))
        rep = rng.integers(0, len(reps), size=(n_boot, 1))
        num, den = c[rep, idx].sum(axis=1), o[rep, idx].sum(axis=1)
        boot = np.where(den != 0, num / np.where(den != 0, den, 1), np.nan)
        lo, hi = np.nanquantile(boot, [0.025, 0.975])
    return s_o, s_c, ratio, float(lo), float(hi)


def conditional_rows(
    shifts: pd.DataFrame, pairs: dict[str, str], n_boot: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """For each conditional direction (``pairs``: conditional name → original name): the
    prediction slope along it and along the original (per unit α, both at the original's
    σ), ``survived`` (their ratio) and its 95 % CI."""
    rng = np.random.default_rng(seed)
    slopes = (
        tile_logit_slopes(shifts)
        if len(shifts)
        else pd.DataFrame(columns=["direction", "replicate", "tile_id", "slide_id", "slope"])
    )
    rows = []
    for cond, orig in pairs.items():
        keys = ["replicate", "tile_id", "slide_id"]
        a = slopes[slopes["direction"] == orig][[*keys, "slope"]].rename(columns={"slope": "orig"})
        b = slopes[slopes["direction"] == cond][[*keys, "slope"]].rename(columns={"slope": "cond"})
        pair = a.merge(b, on=keys).dropna()
        if pair.empty:
            continue
        s_o, s_c, ratio, lo, hi = _survived(pair, n_boot, rng)
        rows.append(
            {
                "section": "conditional",
                "direction": orig,
                "other": cond,
                "logit_slope": s_o,
                "logit_slope_conditional": s_c,
                "survived": ratio,
                "survived_ci_low": lo,
                "survived_ci_high": hi,
            }
        )
    return pd.DataFrame(rows, columns=CONDITIONAL_COLUMNS)
