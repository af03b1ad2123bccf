"""Is a feature's effect specific to a direction, or does it move along any direction in W?

A generator whose W moves nuclei, stain and brightness together moves them along every
direction; such a feature explains nothing about one direction. Each direction's effect is
compared with the same feature's effects along ``K`` random directions drawn from W's own
covariance and shifted on the same tiles (``null``), at the same step length: a random
direction is shifted by its own σ_r per unit α, and its effect rescaled to the tested
direction's σ_d (``σ_d · e_r / σ_r``: a random move of the same Euclidean length). Random
directions come in ± pairs with equal probability, so the null's mean is 0 and its scale is
the root mean square ``s``; with effects Gaussian over random directions,
``z = effect / s`` follows Student's t with K degrees of freedom, which gives
``specific_p`` (two-sided).
``specific_q``: Benjamini–Hochberg over every feature × direction of the run. A feature is
``specific`` when q < ``fdr`` and its bootstrap CI excludes 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import t as student_t


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (NaN stays NaN, excluded from the count)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if not len(ok):
        return q
    order = ok[np.argsort(p[ok])]
    m = len(order)
    ranked = p[order] * m / np.arange(1, m + 1)
    q[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    return q


def null_scale(null: pd.DataFrame) -> pd.DataFrame:
    """Per feature: ``null_rms_per_sigma`` (root mean square of the random directions'
    effects per unit of their σ; σ 1 where ``null`` has no ``sigma``) and ``n_random``."""
    null = null.dropna(subset=["effect"])
    sigma = null.get("sigma", 1.0)
    g = (null["effect"] / sigma).groupby(null["feature"])
    return pd.DataFrame(
        {
            "null_rms_per_sigma": g.apply(lambda e: float(np.sqrt(np.mean(e**2)))),
            "n_random": g.count(),
        }
    )


def specificity(effects: pd.DataFrame, null: pd.DataFrame, fdr: float = 0.05) -> pd.DataFrame:
    """``effects`` (``feature_effects`` of the run's directions, with each direction's
    ``sigma``; 1 without) with ``null_rms`` (the null's scale at that σ), ``specific_z``,
    ``specific_p``, ``specific_q``, ``specific`` and ``rank`` (by |specific_z| within the
    direction: the report's order) from ``null`` (``feature_effects`` of the random
    directions, with their ``sigma``). Without a null (no random direction measured a
    feature) its figures are NaN and it is not specific."""
    out = effects.merge(null_scale(null), left_on="feature", right_index=True, how="left")
    sigma = out.get("sigma", 1.0)
    out["null_rms"] = out.pop("null_rms_per_sigma") * sigma
    k = out["n_random"].fillna(0).to_numpy(dtype=float)
    rms = out["null_rms"].astype(float)
    z = out["effect"].astype(float) / rms.where(rms > 0)
    p = np.where(
        k >= 2, 2 * student_t.sf(np.abs(z.to_numpy(dtype=float)), df=np.maximum(k, 1)), np.nan
    )
    out["specific_z"] = z
    out["specific_p"] = p
    out["specific_q"] = bh_qvalues(p)
    excludes_zero = (out["ci_low"] > 0) | (out["ci_high"] < 0)
    out["specific"] = (out["specific_q"] < fdr).fillna(False).astype(bool) & excludes_zero
    if out.empty:
        return out.assign(rank=pd.Series(dtype=int))
    out["rank"] = (
        out.assign(_a=out["specific_z"].abs().fillna(-1.0))
        .groupby("direction")["_a"]
        .rank(ascending=False, method="first")
        .astype(int)
    )
    return out.sort_values(["direction", "rank"], ignore_index=True)
