"""Feature effects along a direction, with uncertainty from the cohort's slides and from the
pipeline itself.

For each tile shifted along a direction, the slope of every feature against α (least
squares over the α grid) is standardised by that feature's SD over the real tiles. The
effect of a feature is the cohort mean of these per-tile slopes; its confidence interval and
p-value come from a bootstrap over slides (tiles of one slide are not independent) that also
draws one of the pipeline's replicates (another inversion seed and direction refit), so the
interval covers what a re-run would change.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def per_tile_slopes(shifts: pd.DataFrame, features: list[str], x: str = "alpha") -> pd.DataFrame:
    """Least-squares slope of each feature against ``x`` per (direction, replicate, tile):
    long table ``direction, replicate, tile_id, slide_id, feature, slope`` (replicate 0 when
    ``shifts`` has none). Frames with a NaN feature value are left out of that feature's fit;
    fewer than two frames → NaN."""
    if "replicate" not in shifts:
        shifts = shifts.assign(replicate=0)
    keys = ["direction", "replicate", "tile_id", "slide_id"]
    rows = []
    for feat in features:
        d = shifts[[*keys, x, feat]].dropna(subset=[feat])
        g = d.groupby(keys, sort=False)
        xm = g[x].transform("mean")
        ym = g[feat].transform("mean")
        num = ((d[x] - xm) * (d[feat] - ym)).groupby([d[k] for k in keys], sort=False).sum()
        den = ((d[x] - xm) ** 2).groupby([d[k] for k in keys], sort=False).sum()
        slope = (num / den.where(den > 0)).rename("slope").reset_index()
        slope["feature"] = feat
        rows.append(slope)
    if not rows:
        return pd.DataFrame(columns=[*keys, "feature", "slope"])
    return pd.concat(rows, ignore_index=True)[[*keys, "feature", "slope"]]


def standardised(slopes: pd.DataFrame, real_sd: pd.Series) -> pd.DataFrame:
    """``slopes`` with ``std_slope``: the slope in SDs of the feature over the real tiles."""
    sd = slopes["feature"].map(real_sd).astype(float)
    return slopes.assign(std_slope=slopes["slope"].astype(float) / sd.where(sd > 0))


def _slide_means(slopes: pd.DataFrame, by: tuple[str, ...] = ()) -> pd.DataFrame:
    """Per (direction, feature, *by, slide): sum and count of standardised slopes."""
    g = slopes.dropna(subset=["std_slope"]).groupby(["direction", "feature", *by, "slide_id"])
    return g["std_slope"].agg(["sum", "count"]).reset_index()


def bootstrap_mean(
    sums: np.ndarray, counts: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """Tile-weighted cohort means of ``n_boot`` resamples of the slides (with replacement):
    ``sums``/``counts`` [S] for one estimate, or [R, S] for R replicates of the pipeline,
    of which each resample draws one at random (the spread a single run would have)."""
    sums, counts = np.atleast_2d(sums), np.atleast_2d(counts)
    idx = rng.integers(0, sums.shape[1], size=(n_boot, sums.shape[1]))
    rep = rng.integers(0, sums.shape[0], size=(n_boot, 1))
    return sums[rep, idx].sum(axis=1) / np.maximum(counts[rep, idx].sum(axis=1), 1)


def _matrix(grp: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Slide sums and counts as [replicates, slides] (0 where a replicate lacks a slide)."""
    sums = grp.pivot_table("sum", "replicate", "slide_id", aggfunc="sum", fill_value=0.0)
    counts = grp.pivot_table("count", "replicate", "slide_id", aggfunc="sum", fill_value=0)
    return sums.to_numpy(np.float64), counts.reindex_like(sums).to_numpy(np.float64)


def feature_effects(
    slopes: pd.DataFrame,
    real_sd: pd.Series,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """One row per direction × feature: ``effect`` (mean standardised slope per unit α,
    averaged over the pipeline's replicates), ``ci_low``, ``ci_high`` and ``p_value`` (two
    sided) from a bootstrap over slides that also draws the replicate (inversion seed and
    direction refit), ``replicate_sd`` (SD of the replicates' effects), ``raw_rank`` by
    |effect| within the direction, ``n_tiles``, ``n_slides``, ``n_replicates``."""
    if slopes.empty:  # nothing was shifted along any direction: the columns, no rows
        return pd.DataFrame(columns=EFFECT_COLUMNS)
    s = standardised(slopes if "replicate" in slopes else slopes.assign(replicate=0), real_sd)
    rng = np.random.default_rng(seed)
    out = []
    means = _slide_means(s, ("replicate",))
    for (direction, feat), grp in means.groupby(["direction", "feature"], sort=False):
        sums, counts = _matrix(grp)
        per_rep = sums.sum(axis=1) / np.maximum(counts.sum(axis=1), 1)
        n_slides = int((counts > 0).sum(axis=1).max())
        if n_slides >= 2:
            boot = bootstrap_mean(sums, counts, n_boot, rng)
            lo, hi = np.quantile(boot, [(1 - level) / 2, 1 - (1 - level) / 2])
            # Two-sided p: how often the resampled mean falls on the other side of 0.
            tail = min((boot <= 0).mean(), (boot >= 0).mean())
            p = float(min(1.0, max(2 * tail, 1.0 / n_boot)))
        else:  # one slide: no between-slide uncertainty to estimate
            lo = hi = p = np.nan
        out.append(
            {
                "direction": direction,
                "feature": feat,
                "effect": float(per_rep.mean()),
                "ci_low": float(lo),
                "ci_high": float(hi),
                "p_value": p,
                "replicate_sd": float(per_rep.std(ddof=1)) if len(per_rep) > 1 else np.nan,
                "n_tiles": int(counts.sum(axis=1).max()),
                "n_slides": n_slides,
                "n_replicates": len(per_rep),
            }
        )
    df = pd.DataFrame(out)
    if df.empty:
        return pd.DataFrame(columns=EFFECT_COLUMNS)
    df["raw_rank"] = (
        df.groupby("direction")["effect"]
        .transform(lambda e: e.abs().rank(ascending=False, method="first"))
        .astype(int)
    )
    return df.sort_values(["direction", "raw_rank"], ignore_index=True)


EFFECT_COLUMNS = [
    "direction",
    "feature",
    "effect",
    "ci_low",
    "ci_high",
    "p_value",
    "replicate_sd",
    "n_tiles",
    "n_slides",
    "n_replicates",
    "raw_rank",
]


def group_effects(
    slopes: pd.DataFrame, real_sd: pd.Series, groups: pd.Series, column: str, min_slides: int = 2
) -> pd.DataFrame:
    """Effects within each group of a metadata ``column`` (``groups``: slide_id → value) and
    a between-group heterogeneity test (Kruskal–Wallis on per-slide mean slopes). Groups
    with fewer than ``min_slides`` slides are reported as not estimable."""
    from scipy.stats import kruskal

    means = _slide_means(standardised(slopes, real_sd))
    means["mean"] = means["sum"] / means["count"]
    means["group"] = means["slide_id"].map(groups).astype(str)
    rows = []
    for (direction, feat), grp in means.groupby(["direction", "feature"], sort=False):
        samples = {g: v["mean"].to_numpy() for g, v in grp.groupby("group")}
        ok = {g: v for g, v in samples.items() if len(v) >= min_slides}
        p_het = np.nan
        if len(ok) >= 2:
            try:
                p_het = float(kruskal(*ok.values()).pvalue)
            except ValueError:  # all values identical
                p_het = 1.0
        for g, v in samples.items():
            sub = grp[grp["group"] == g]
            rows.append(
                {
                    "direction": direction,
                    "column": column,
                    "group": g,
                    "feature": feat,
                    "effect": float(sub["sum"].sum() / sub["count"].sum()),
                    "n_slides": len(v),
                    "n_tiles": int(sub["count"].sum()),
                    "estimable": len(v) >= min_slides,
                    "p_heterogeneity": p_het,
                }
            )
    return pd.DataFrame(rows)
