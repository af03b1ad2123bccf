"""From the analysis' measurements to its tables: effects with their specificity, the bias
sections, the generator gate and one verdict per direction."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import AnalysisConfig
from pipeline.directions.sets import DirectionSet
from pipeline.features import unwrap_circular
from pipeline.gan.quality import latent_space_checks
from pipeline.probes.perturb import PERTURBATIONS
from pipeline.probes.stats import AGREEMENT_COLUMNS, PROBE_COLUMNS, agreement, probe_effects
from pipeline.reports.bias import conditional_rows, cosine_rows
from pipeline.reports.effects import (
    EFFECT_COLUMNS,
    feature_effects,
    group_effects,
    per_tile_slopes,
    standardised,
)
from pipeline.reports.specificity import specificity
from pipeline.reports.verdicts import editability, reach, verdict_rows

SHIFT_KEYS = ["tile_id", "slide_id", "direction", "replicate", "alpha", "logit", "prediction"]


@dataclass
class Samples:
    """The generator's samples the directions are fitted on: latents [N, w_dim], the
    classifier's logits [N, C] and the features of the first few samples."""

    w: np.ndarray
    logits: np.ndarray
    features: pd.DataFrame


def kind_of(name: str) -> str:
    """The kind of a direction from its name (for directions that could not be fitted)."""
    if "|without:" in name:
        return "conditional"
    prefix = name.split(":")[0]
    return {"meta": "metadata", "pc": "pc", "random": "random"}.get(prefix, "classifier")


def directions_table(sets: list[DirectionSet], skipped: list[dict]) -> pd.DataFrame:
    """One row per direction and replicate (and per direction that could not be fitted)."""
    rows = [
        {
            "name": d.name,
            "kind": d.kind,
            "replicate": s.replicate,
            "estimable": True,
            "reason": "",
            "vector": d.vector.astype(np.float32).tolist(),
            "sigma": s.sigmas[d.name],
            "auc": d.metrics.get("auc"),
            "accuracy": d.metrics.get("accuracy"),
            "stability": d.metrics.get("stability"),
            "metrics": json.dumps(d.metrics, default=str),
        }
        for s in sets
        for d in s.directions
    ]
    rows += [
        {
            "name": s["name"],
            "kind": kind_of(s["name"]),
            "replicate": 0,
            "estimable": False,
            "reason": s["reason"],
            "vector": None,
            "sigma": None,
            "auc": None,
            "accuracy": None,
            "stability": None,
            "metrics": "{}",
        }
        for s in skipped
    ]
    return pd.DataFrame(rows)


def effects_per_logit(
    shifts: pd.DataFrame, features: list[str], real_sd: pd.Series
) -> pd.DataFrame:
    """Per direction × feature: the mean per-tile slope of the feature (in SDs) against the
    classifier's logit."""
    per = standardised(per_tile_slopes(shifts, features, x="logit"), real_sd)
    return (
        per.groupby(["direction", "feature"])["std_slope"]
        .mean()
        .rename("effect_per_logit")
        .reset_index()
    )


def _kinds(sets: list[DirectionSet]) -> dict[str, str]:
    return {d.name: d.kind for d in sets[0].directions}


def effects_tables(
    acfg: AnalysisConfig,
    sets: list[DirectionSet],
    shifts: pd.DataFrame,
    real_sd: pd.Series,
    features: list[str],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(feature effects of the run's directions with specificity, the random directions'
    effects: the null)."""
    kinds = _kinds(sets)
    is_random = shifts["direction"].map(kinds).eq("random")
    slopes = per_tile_slopes(shifts[~is_random], features)
    sigma = sets[0].sigmas
    effects = feature_effects(slopes, real_sd, n_boot=acfg.n_boot, seed=acfg.seed)
    null = feature_effects(
        per_tile_slopes(shifts[is_random], features), real_sd, n_boot=100, seed=acfg.seed
    )
    effects["sigma"], null["sigma"] = effects["direction"].map(sigma), null["direction"].map(sigma)
    effects = specificity(effects, null, fdr=acfg.fdr)
    if len(effects):
        effects = effects.merge(
            effects_per_logit(shifts[~is_random], features, real_sd),
            on=["direction", "feature"],
            how="left",
        )
    return effects, null


def bias_tables(
    acfg: AnalysisConfig,
    sets: list[DirectionSet],
    shifts: pd.DataFrame,
    real_sd: pd.Series,
    features: list[str],
    slide_meta: pd.DataFrame,
) -> pd.DataFrame:
    """cohort_bias.parquet: effects within metadata groups, cosines against their
    permutation null, and what survives projecting the metadata directions out."""
    kinds = _kinds(sets)
    own = shifts[
        shifts["direction"].map(kinds).isin(["classifier", "metadata", "conditional", "pc"])
    ]
    slopes = per_tile_slopes(own, features)
    parts = [
        group_effects(slopes, real_sd, slide_meta[c], c, acfg.min_slides).assign(
            section="group_effect"
        )
        for c in acfg.metadata
        if c in slide_meta
    ]
    parts.append(cosine_rows(sets[0].directions, sets[0].nulls))
    pairs = {d.name: d.metrics["original"] for d in sets[0].directions if d.kind == "conditional"}
    parts.append(conditional_rows(own, pairs, n_boot=acfg.n_boot, seed=acfg.seed))
    return pd.concat([p for p in parts if len(p.columns)], ignore_index=True)


def fidelity_figures(fid: pd.DataFrame) -> dict[str, float]:
    ok = fid[fid["faithful"]]
    return {
        "faithful_share": float(fid["faithful"].mean()) if len(fid) else 0.0,
        "faithful_tiles": float(len(ok)),
        "faithful_slides": float(ok["slide_id"].nunique()),
    }


def verdicts_table(
    sets: list[DirectionSet],
    skipped: list[dict],
    effects: pd.DataFrame,
    shifts: pd.DataFrame,
    fid: pd.DataFrame,
    generator: dict[str, Any],
    agreed: pd.DataFrame | None = None,
    sample_shifts: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One verdict per direction of the run (random ones excluded) and per direction that
    could not be fitted; ``agreed``: the probes' agreement table (None: no probes ran);
    ``sample_shifts``: generator samples shifted like the tiles (None: no editability)."""
    common = fidelity_figures(fid) | {
        k: generator.get(k)
        for k in ("w_participation_ratio", "feature_pr_ratio", "worst_pair_corr_gap")
    }
    blocked = []
    if not fid["faithful"].any():
        why = fid["fidelity_reason"].str.split("; ").explode().value_counts()
        blocked = [
            "no tile passed the fidelity gate ("
            + ", ".join(f"{k}: {v} of {len(fid)}" for k, v in why.items() if k)
            + ")"
        ]
    by_name = {d.name: d for d in sets[0].directions}
    rows = []
    for d in sets[0].directions:
        if d.kind == "random":
            continue
        src = by_name.get(d.metrics.get("original", ""), d) if d.kind == "conditional" else d
        n_spec = int(effects.loc[effects["direction"] == d.name, "specific"].sum())
        figures = {
            "auc": src.metrics.get("auc"),
            "stability": src.metrics.get("stability"),
            "n_specific": n_spec if len(effects) else None,
        }
        if d.kind in ("classifier", "conditional"):
            figures["reach"] = reach(shifts, d.name)
            if sample_shifts is not None:
                figures["editability"] = editability(shifts, sample_shifts, d.name)
            if agreed is not None:
                mine = agreed[agreed["direction"] == d.name]
                figures["probe_disagreements"] = int((mine["agreement"] == "disagree").sum())
        rows.append({"direction": d.name, "kind": d.kind, **common, **figures, "blocked": blocked})
    for s in skipped:
        rows.append(
            {
                "direction": s["name"],
                "kind": kind_of(s["name"]),
                **common,
                "blocked": [f"not estimable: {s['reason']}", *blocked],
            }
        )
    return verdict_rows(rows)


def empty_shifts(features: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=[*SHIFT_KEYS, *features])


def findings(
    acfg: AnalysisConfig,
    modality: str,
    sets: list[DirectionSet],
    skipped: list[dict],
    samples: Samples,
    real: pd.DataFrame,
    fid: pd.DataFrame,
    shifts: pd.DataFrame | None,
    features: list[str],
    slide_meta: pd.DataFrame,
    probed: pd.DataFrame | None = None,
    sample_shifts: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Every table of ``analysis/`` (name → DataFrame) and ``generator`` (the gate's dict);
    ``sample_shifts``: samples shifted along the classifier and conditional directions
    (``direction, replicate, tile_id, alpha, logit``), for the editability gate."""
    shifts = empty_shifts(features) if shifts is None else shifts
    real = unwrap_circular(real, modality)  # circular features (hue) as angles about the mean
    unwrapped = unwrap_circular(shifts, modality, ref=real)
    real_sd = real[features].std()
    sample_feats = unwrap_circular(samples.features, modality, ref=real)
    generator = latent_space_checks(samples.w, real[features], sample_feats[features])
    if len(shifts):
        effects, null = effects_tables(acfg, sets, unwrapped, real_sd, features)
        bias = bias_tables(acfg, sets, unwrapped, real_sd, features, slide_meta)
    else:  # nothing was shifted (no faithful tile): the tables keep their columns
        effects = specificity(
            pd.DataFrame(columns=EFFECT_COLUMNS), pd.DataFrame(columns=EFFECT_COLUMNS), fdr=acfg.fdr
        )
        null = pd.DataFrame(columns=EFFECT_COLUMNS)
        bias = pd.concat(
            [cosine_rows(sets[0].directions, sets[0].nulls), conditional_rows(shifts, {})],
            ignore_index=True,
        )
    identities = {f: v[0] for f, v in PERTURBATIONS.items()}
    kinds = {d.name: d.kind for d in sets[0].directions}
    groups = {c: slide_meta[c] for c in acfg.metadata if c in slide_meta}
    if probed is not None and len(probed):
        probes = probe_effects(probed, groups, n_boot=acfg.n_boot, seed=acfg.seed)
        agreed = agreement(effects, kinds, probes, identities)
    else:
        probes, agreed = pd.DataFrame(columns=PROBE_COLUMNS), None
    return {
        "perturbations": probes,
        "agreement": agreed if agreed is not None else pd.DataFrame(columns=AGREEMENT_COLUMNS),
        "directions": directions_table(sets, skipped),
        "fidelity": fid,
        "shifts": shifts,
        "feature_effects": effects,
        "null_effects": null,
        "cohort_bias": bias,
        "verdicts": verdicts_table(
            sets, skipped, effects, shifts, fid, generator, agreed, sample_shifts
        ),
        "generator": generator,
    }
