"""Feature effects along a direction, with uncertainty from the cohort's slides.

For each tile shifted along a direction, the slope of every feature against α (least
squares over the α grid) is standardised by that feature's SD over the real tiles. The
effect of a feature is the cohort mean of these per-tile slopes; its confidence interval and
p-value come from a bootstrap over slides (tiles of one slide are not independent).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def per_tile_slopes(shifts: pd.DataFrame, features: list[str], x: str = "alpha") -> pd.DataFrame:
    """Least-squares slope of each feature against ``x`` per (direction, tile):
    long table ``direction, tile_id, slide_id, feature, slope``. Frames with a NaN feature
    value are left out of that feature's fit; fewer than two frames → NaN."""
    keys = ["direction", "tile_id", "slide_id"]
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
    return pd.concat(rows, ignore_index=True)[[*keys, "feature", "slope"]]


def _slide_means(slopes: pd.DataFrame) -> pd.DataFrame:
    """Per (direction, feature, slide): sum and count of standardised slopes."""
    g = slopes.dropna(subset=["std_slope"]).groupby(["direction", "feature", "slide_id"])
    return g["std_slope"].agg(["sum", "count"]).reset_index()


def bootstrap_mean(sums: np.ndarray, counts: np.ndarray, n_boot: int,
                   rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """Tile-weighted cohort means of ``n_boot`` resamples of the slides (with replacement)."""
    idx = rng.integers(0, len(sums), size=(n_boot, len(sums)))
    return sums[idx].sum(axis=1) / np.maximum(counts[idx].sum(axis=1), 1)


def feature_effects(slopes: pd.DataFrame, real_sd: pd.Series, *, n_boot: int = 2000,
                    seed: int = 0, level: float = 0.95) -> pd.DataFrame:  # fmt: skip
    """One row per direction × feature: ``effect`` (mean standardised slope per unit α),
    ``ci_low``, ``ci_high`` (bootstrap over slides), ``p_value`` (two-sided bootstrap),
    ``rank`` by |effect| within the direction, ``n_tiles``, ``n_slides``."""
    s = slopes.copy()
    sd = s["feature"].map(real_sd)
    s["std_slope"] = s["slope"] / sd.where(sd > 0)
    rng = np.random.default_rng(seed)
    out = []
    for (direction, feat), grp in _slide_means(s).groupby(["direction", "feature"], sort=False):
        sums, counts = grp["sum"].to_numpy(), grp["count"].to_numpy()
        effect = float(sums.sum() / counts.sum())
        if len(grp) >= 2:
            boot = bootstrap_mean(sums, counts, n_boot, rng)
            lo, hi = np.quantile(boot, [(1 - level) / 2, 1 - (1 - level) / 2])
            # Two-sided p: how often the resampled mean falls on the other side of 0.
            tail = min((boot <= 0).mean(), (boot >= 0).mean())
            p = float(min(1.0, max(2 * tail, 1.0 / n_boot)))
        else:  # one slide: no between-slide uncertainty to estimate
            lo = hi = p = np.nan
        out.append({"direction": direction, "feature": feat, "effect": effect,
                    "ci_low": float(lo), "ci_high": float(hi), "p_value": p,
                    "n_tiles": int(counts.sum()), "n_slides": len(grp)})  # fmt: skip
    df = pd.DataFrame(out)
    if df.empty:
        return df
    df["rank"] = (df.groupby("direction")["effect"].transform(lambda e: e.abs().rank(
        ascending=False, method="first")).astype(int))  # fmt: skip
    return df.sort_values(["direction", "rank"], ignore_index=True)


def group_effects(slopes: pd.DataFrame, real_sd: pd.Series, groups: pd.Series,
                  column: str, min_slides: int = 2) -> pd.DataFrame:  # fmt: skip
    """Effects within each group of a metadata ``column`` (``groups``: slide_id → value) and
    a between-group heterogeneity test (Kruskal–Wallis on per-slide mean slopes). Groups
    with fewer than ``min_slides`` slides are reported as not estimable."""
    from scipy.stats import kruskal

    s = slopes.copy()
    sd = s["feature"].map(real_sd)
    s["std_slope"] = s["slope"] / sd.where(sd > 0)
    means = _slide_means(s)
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
            rows.append({
                "direction": direction, "column": column, "group": g, "feature": feat,
                "effect": float(sub["sum"].sum() / sub["count"].sum()),
                "n_slides": len(v), "n_tiles": int(sub["count"].sum()),
                "estimable": len(v) >= min_slides, "p_heterogeneity": p_het,
            })  # fmt: skip
    return pd.DataFrame(rows)
