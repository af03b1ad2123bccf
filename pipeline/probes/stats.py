"""From probe scores to ``perturbations.parquet`` and ``agreement.parquet``.

A probe's effect is the mean change of the explained class's logit over the tiles (the tile
perturbed minus the tile as it is), with a bootstrap CI and p-value over slides; ``flip_share``
is the share of tiles whose predicted class changes. Agreement checks each GAN finding
(a feature specific to a classifier direction) against the probe family that changes the same
property in pixel space: the GAN says the logit rises with the feature (its effect's sign);
the probe says how the logit moves when the feature is raised directly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.reports.effects import bootstrap_mean

# Feature → (probe family, +1 when raising the family's strength above identity raises the
# feature, −1 when it lowers it).
FEATURE_PROBES: dict[str, tuple[str, int]] = {
    "eosin_mean": ("eosin", 1),
    "hematoxylin_mean": ("hematoxylin", 1),
    "nuclear_hematoxylin_mean": ("hematoxylin", 1),
    "sharpness": ("blur", -1),
    "texture_contrast": ("blur", -1),
    "texture_homogeneity": ("blur", 1),
    "edge_density": ("blur", -1),
    "local_contrast": ("contrast", 1),
    "brightness": ("brightness", 1),
    "intensity_mean": ("brightness", 1),
    "intensity_std": ("contrast", 1),
}
PROBE_COLUMNS = [
    "perturbation",
    "family",
    "target",
    "strength",
    "group",
    "effect",
    "ci_low",
    "ci_high",
    "p_value",
    "flip_share",
    "n_tiles",
    "n_slides",
]
AGREEMENT_COLUMNS = [
    "direction",
    "feature",
    "gan_effect",
    "family",
    "strength",
    "probe_effect",
    "probe_ci_low",
    "probe_ci_high",
    "agreement",
    "reason",
]


def _effect_row(g: pd.DataFrame, n_boot: int, rng: np.random.Generator) -> dict[str, float]:
    per = g.groupby("slide_id").agg(s=("delta", "sum"), n=("delta", "count"), f=("flip", "sum"))
    sums, counts = per["s"].to_numpy(), per["n"].to_numpy(float)
    lo = hi = p = np.nan
    if len(per) >= 2:
        boot = bootstrap_mean(sums, counts, n_boot, rng)
        lo, hi = np.quantile(boot, [0.025, 0.975])
        tail = min((boot <= 0).mean(), (boot >= 0).mean())
        p = float(min(1.0, max(2 * tail, 1.0 / n_boot)))
    return {
        "effect": float(sums.sum() / counts.sum()),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "p_value": p,
        "flip_share": float(per["f"].sum() / counts.sum()),
        "n_tiles": int(counts.sum()),
        "n_slides": len(per),
    }


def probe_effects(
    scores: pd.DataFrame, groups: dict[str, pd.Series], n_boot: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """``scores``: one row per tile × probe (``tile_id, slide_id, perturbation, family,
    target, strength, logit, prediction, base_logit, base_prediction``); ``groups``: metadata
    column → (slide_id → value). One row per probe and group (``all``, or
    ``<column>=<value>``) in ``PROBE_COLUMNS``."""
    if scores.empty:
        return pd.DataFrame(columns=PROBE_COLUMNS)
    s = scores.assign(
        delta=scores["logit"] - scores["base_logit"],
        flip=(scores["prediction"] >= 0.5) != (scores["base_prediction"] >= 0.5),
    )
    rng = np.random.default_rng(seed)
    keys = ["perturbation", "family", "target", "strength"]
    rows = []
    for k, g in s.groupby(keys, sort=False):
        rows.append(
            {**dict(zip(keys, k, strict=True)), "group": "all", **_effect_row(g, n_boot, rng)}
        )
        for col, of_slide in groups.items():
            for value, gg in g.groupby(g["slide_id"].map(of_slide).astype(str)):
                rows.append(
                    {
                        **dict(zip(keys, k, strict=True)),
                        "group": f"{col}={value}",
                        **_effect_row(gg, n_boot, rng),
                    }
                )
    return pd.DataFrame(rows, columns=PROBE_COLUMNS)


def _strongest(probes: pd.DataFrame, family: str, identity: float, up: bool) -> pd.Series | None:
    """The ``all`` row of ``family`` at the strength farthest from ``identity`` on the side
    that raises the feature when ``up`` (else on either side)."""
    p = probes[(probes["family"] == family) & (probes["group"] == "all")]
    side = p[p["strength"] > identity] if up else p
    side = side if len(side) else p
    if side.empty:
        return None
    return side.loc[(side["strength"] - identity).abs().idxmax()]


def agreement(
    effects: pd.DataFrame, kinds: dict[str, str], probes: pd.DataFrame, identities: dict[str, float]
) -> pd.DataFrame:
    """Each specific feature of a classifier (or conditional) direction against its probe:
    ``agree`` (the probe moves the logit the way the GAN's effect says, CI excluding 0),
    ``disagree`` (the opposite, or no change: the model does not read the feature itself) or
    ``untestable`` (no probe changes that feature, or its family did not run)."""
    rows = []
    spec = effects[effects["specific"].astype(bool)] if len(effects) else effects
    for r in spec.itertuples():
        if kinds.get(r.direction) not in ("classifier", "conditional"):
            continue
        row = {
            "direction": r.direction,
            "feature": r.feature,
            "gan_effect": float(r.effect),
            "family": None,
            "strength": np.nan,
            "probe_effect": np.nan,
            "probe_ci_low": np.nan,
            "probe_ci_high": np.nan,
        }
        family, sign = FEATURE_PROBES.get(r.feature, (None, 0))
        best = None if family is None else _strongest(probes, family, identities[family], True)
        if best is None:
            why = "no probe changes this feature" if family is None else f"{family} not probed"
            rows.append(row | {"agreement": "untestable", "reason": why})
            continue
        raised = sign * np.sign(best["strength"] - identities[family])  # +1: the feature rises
        implied = best["effect"] * raised  # logit change per rise of the feature
        row |= {
            "family": family,
            "strength": float(best["strength"]),
            "probe_effect": float(best["effect"]),
            "probe_ci_low": float(best["ci_low"]),
            "probe_ci_high": float(best["ci_high"]),
        }
        if not (best["ci_low"] > 0 or best["ci_high"] < 0):
            verdict, why = (
                "disagree",
                f"{best['perturbation']} {best['strength']:g} leaves the logit unchanged",
            )
        elif np.sign(implied) == np.sign(r.effect):
            verdict, why = (
                "agree",
                f"{best['perturbation']} {best['strength']:g} moves the logit the same way",
            )
        else:
            verdict, why = (
                "disagree",
                f"{best['perturbation']} {best['strength']:g} moves the logit the other way",
            )
        rows.append(row | {"agreement": verdict, "reason": why})
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)
