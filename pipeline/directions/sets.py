"""The directions of one replicate of the analysis, fitted together: the classifier's (on the
samples, or a bootstrap resample of them for replicates after the first), the metadata ones
(on the replicate's inverted latents), principal, conditional and — for the first replicate —
the random directions of the specificity null and the permutation nulls of the cosines."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.directions.fit import (
    Direction,
    DirectionFitError,
    classifier_directions,
    covariance_directions,
    metadata_directions,
    permutation_cosines,
    principal_directions,
)
from pipeline.directions.shift import latent_sigma, project_out


@dataclass
class DirectionSet:
    """Directions of one replicate with the σ each is shifted by (a conditional direction
    moves by its original's σ: equal Euclidean steps) and, for the first replicate, the
    permutation null of |cosine| per (classifier direction, metadata direction)."""

    replicate: int
    directions: list[Direction]
    sigmas: dict[str, float]
    nulls: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class FitSpec:
    """How the directions are fitted (from ``analysis`` and the classifier's card)."""

    class_names: list[str]
    explain: str
    columns: list[str]
    method: str = "logistic"
    n_pcs: int = 0
    conditional: bool = True
    n_random: int = 16
    n_permutations: int = 200
    seed: int = 0


def _conditional(dirs: list[Direction], metas: list[Direction]) -> tuple[list[Direction], list]:
    out, skipped = [], []
    for d in (d for d in dirs if d.kind == "classifier"):
        name = f"{d.name}|without:meta"
        try:
            vec = project_out(d.vector, [m.vector for m in metas])
        except ValueError as exc:
            skipped.append({"name": name, "reason": str(exc)})
            continue
        info = {"original": d.name, "removed": [m.name for m in metas]}
        out.append(Direction(name, "conditional", vec, info))
    return out, skipped


def fit_set(
    w: np.ndarray,
    logits: np.ndarray,
    latents: np.ndarray,
    meta: pd.DataFrame,
    groups: np.ndarray,
    strata: np.ndarray | None,
    spec: FitSpec,
    replicate: int = 0,
) -> tuple[DirectionSet, list[dict]]:
    """Every direction of replicate ``replicate`` and the ones not estimable (with reasons).
    ``w``/``logits``: the samples; ``latents`` [n, L, D], ``meta``, ``groups`` (slides or
    patients), ``strata`` (labels, or None): the replicate's inverted tiles."""
    fit_w, fit_logits = w, logits
    if replicate:  # the direction's own uncertainty: a bootstrap resample of the samples
        idx = np.random.default_rng([spec.seed, replicate]).integers(0, len(w), len(w))
        fit_w, fit_logits = w[idx], logits[idx]
    try:
        dirs, skipped = classifier_directions(
            fit_w, fit_logits, spec.class_names, spec.explain, method=spec.method, seed=spec.seed
        )
    except DirectionFitError as exc:  # e.g. one class on every sample: report, go on
        dirs, skipped = [], [{"name": "classifier", "reason": str(exc)}]
    metas, meta_skipped = metadata_directions(
        latents.mean(axis=1), meta, spec.columns, groups=groups, strata=strata, seed=spec.seed
    )
    dirs, skipped = dirs + metas, skipped + meta_skipped
    if spec.n_pcs:
        dirs += principal_directions(fit_w, spec.n_pcs)
    if spec.conditional and metas:
        cond, cond_skipped = _conditional(dirs, metas)
        dirs, skipped = dirs + cond, skipped + cond_skipped
    nulls = {}
    if replicate == 0:
        randoms = covariance_directions(w, spec.n_random, seed=spec.seed)
        dirs += [Direction(f"random:{k + 1}", "random", v) for k, v in enumerate(randoms)]
        nulls = cosine_nulls(dirs, latents, meta, groups, strata, spec)
    sigmas = {d.name: latent_sigma(w, d.vector) for d in dirs}
    for d in dirs:
        if d.kind == "conditional":
            sigmas[d.name] = sigmas[d.metrics["original"]]
    return DirectionSet(replicate, dirs, sigmas, nulls), skipped


def cosine_nulls(
    dirs: list[Direction],
    latents: np.ndarray,
    meta: pd.DataFrame,
    groups: np.ndarray,
    strata: np.ndarray | None,
    spec: FitSpec,
) -> dict[tuple[str, str], np.ndarray]:
    """Per (classifier direction, metadata direction): the |cosines| to metadata directions
    refitted on slide-level shuffles of the column (``permutation_cosines``)."""
    cls = [d for d in dirs if d.kind == "classifier"]
    if not cls:
        return {}
    refs = np.stack([d.vector for d in cls])
    out = {}
    for m in (d for d in dirs if d.kind == "metadata"):
        null = permutation_cosines(
            latents.mean(axis=1),
            meta[m.metrics["column"]].astype(str).to_numpy(),
            m.metrics["value"],
            groups,
            refs,
            strata=strata,
            n_perm=spec.n_permutations,
            seed=spec.seed,
        )
        out |= {(c.name, m.name): null[:, k] for k, c in enumerate(cls)}
    return out
