"""Fitting directions in W: the unit normal of a linear model separating latents.

As in Schutte et al. (and InterFaceGAN): sample latents, synthesise, score with the
classifier, fit a linear model in W; its unit normal is the direction that changes the
prediction. Held-out AUC says how well W linearly explains the classifier (or metadata);
the cosine between normals fitted on two disjoint halves of the data says whether the
direction is determined by the data or by the draw (``stability``).

Metadata directions are fitted on inverted real tiles, whose tiles are not independent: their
held-out figures come from folds of whole slides (or patients), and with a label column they
are fitted within label strata, so a center that is confounded with the label cannot make its
direction a label direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, train_test_split


class DirectionFitError(ValueError):
    """A direction cannot be estimated (one class only, too few samples)."""


@dataclass(frozen=True)
class Direction:
    """A unit vector in W with how it was obtained and how well it fits."""

    name: str  # classifier, classifier:<class>, meta:<column>=<value>, pc:<k>, random:<k>
    kind: str  # classifier | metadata | pc | conditional | random
    vector: np.ndarray  # [w_dim], unit length
    metrics: dict[str, Any] = field(default_factory=dict)


def unit(v: np.ndarray) -> np.ndarray:
    """``v / |v|`` as float32; raises ``DirectionFitError`` for a zero or non-finite ``v``."""
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n == 0:
        raise DirectionFitError("the fitted normal is zero or not finite")
    return (v / n).astype(np.float32)


def _check_classes(y: np.ndarray, min_per_class: int) -> np.ndarray:
    counts = np.bincount(y, minlength=2)
    if len(counts) > 2 or counts.min() < min_per_class:
        raise DirectionFitError(
            f"degenerate fit: class counts {counts.tolist()} (need ≥ {min_per_class} of each)"
        )
    return counts


def logistic_normal(w: np.ndarray, y: np.ndarray, c: float = 1.0) -> np.ndarray:
    """Unit normal (toward y = 1) of an L2 logistic regression of binary ``y`` on ``w``."""
    model = LogisticRegression(C=c, max_iter=2000).fit(w - w.mean(axis=0), y)
    return unit(model.coef_[0])


def fit_linear_direction(
    w: np.ndarray,
    y: np.ndarray,
    *,
    seed: int = 0,
    test_fraction: float = 0.25,
    min_per_class: int = 5,
    c: float = 1.0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Logistic regression of binary ``y`` on latents ``w`` [N, D] → (unit normal pointing
    to y = 1, metrics: held-out AUC and accuracy, sample counts)."""
    y = np.asarray(y).astype(int)
    counts = _check_classes(y, min_per_class)
    w_tr, w_te, y_tr, y_te = train_test_split(
        w, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    center = w_tr.mean(axis=0)
    model = LogisticRegression(C=c, max_iter=2000).fit(w_tr - center, y_tr)
    score = model.decision_function(w_te - center)
    metrics = {
        "auc": float(roc_auc_score(y_te, score)),
        "accuracy": float(accuracy_score(y_te, score > 0)),
        "n_train": len(y_tr),
        "n_test": len(y_te),
        "n_positive": int(counts[1]),
    }
    return unit(model.coef_[0]), metrics


def fit_grouped_direction(
    w: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    seed: int = 0,
    folds: int = 4,
    min_per_class: int = 5,
    c: float = 1.0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """As ``fit_linear_direction`` for tiles grouped by slide (or patient): the normal is
    fitted on all tiles; AUC and accuracy are out-of-fold over ``folds`` folds of whole
    groups (stratified by class), so no slide is both fitted and scored. NaN when fewer than
    two groups of each class exist."""
    y = np.asarray(y).astype(int)
    counts = _check_classes(y, min_per_class)
    groups = np.asarray(groups).astype(str)
    vec = logistic_normal(w, y, c)
    per_class = [len(set(groups[y == k])) for k in (0, 1)]
    metrics: dict[str, Any] = {
        "auc": float("nan"),
        "accuracy": float("nan"),
        "n_train": len(y),
        "n_groups": len(set(groups)),
        "n_positive": int(counts[1]),
        "split": "groups",
    }
    k = min(folds, *per_class)
    if k < 2:
        return vec, metrics
    score = np.full(len(y), np.nan)
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for tr, te in cv.split(w, y, groups):
        if len(set(y[tr])) < 2:
            continue
        center = w[tr].mean(axis=0)
        model = LogisticRegression(C=c, max_iter=2000).fit(w[tr] - center, y[tr])
        score[te] = model.decision_function(w[te] - center)
    ok = np.isfinite(score)
    if len(set(y[ok])) == 2:
        metrics["auc"] = float(roc_auc_score(y[ok], score[ok]))
        metrics["accuracy"] = float(accuracy_score(y[ok], score[ok] > 0))
    return vec, metrics


def fit_regression_direction(
    w: np.ndarray, target: np.ndarray, *, seed: int = 0, test_fraction: float = 0.25
) -> tuple[np.ndarray, dict[str, Any]]:
    """Ridge regression of a continuous ``target`` (e.g. the logit) on ``w`` → (unit normal
    pointing to larger targets, held-out R² and AUC of the fit against target > 0)."""
    w_tr, w_te, t_tr, t_te = train_test_split(w, target, test_size=test_fraction, random_state=seed)
    model = Ridge(alpha=1.0).fit(w_tr, t_tr)
    pred = model.predict(w_te)
    metrics: dict[str, Any] = {
        "r2": float(r2_score(t_te, pred)),
        "n_train": len(t_tr),
        "n_test": len(t_te),
    }
    if 0 < (t_te > 0).sum() < len(t_te):
        metrics["auc"] = float(roc_auc_score(t_te > 0, pred))
    return unit(model.coef_), metrics


def split_half_cosine(
    w: np.ndarray,
    y: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    seed: int = 0,
    regression: bool = False,
) -> float:
    """Cosine between directions fitted on two disjoint halves of the data (stratified by
    class; by whole ``groups`` when given): 1 when the data determine the direction, near the
    chance level of two unrelated fits when they do not. NaN when a half has one class."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    if regression:
        half = rng.permutation(len(y)) < len(y) // 2
    elif groups is None:
        half = np.zeros(len(y), bool)
        for k in np.unique(y):
            idx = np.flatnonzero(y == k)
            half[rng.permutation(idx)[: len(idx) // 2]] = True
    else:
        groups = np.asarray(groups).astype(str)
        first: set[str] = set()
        for k in np.unique(y):
            g = np.unique(groups[y == k])
            first |= set(rng.permutation(g)[: len(g) // 2])
        half = np.isin(groups, sorted(first))
    vecs = []
    for part in (half, ~half):
        if regression:
            vecs.append(unit(Ridge(alpha=1.0).fit(w[part], y[part]).coef_))
        elif len(set(y[part].astype(int))) < 2:
            return float("nan")
        else:
            vecs.append(logistic_normal(w[part], y[part].astype(int)))
    return float(vecs[0] @ vecs[1])


def classifier_directions(
    w: np.ndarray,
    logits: np.ndarray,
    class_names: list[str],
    explain: str,
    *,
    method: str = "logistic",
    seed: int = 0,
) -> tuple[list[Direction], list[dict]]:
    """Directions from synthesised samples' latents ``w`` [N, D] and classifier logits [N] or
    [N, C]. Binary: one ``classifier`` direction toward ``explain``. Multi-class: one
    ``classifier:<class>`` direction per class (that class vs the rest); classes the model
    never (or always) predicts are returned as not estimable, with the reason. Each carries
    ``stability`` (``split_half_cosine``). Raises ``DirectionFitError`` when no direction can
    be fitted at all."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 1 or logits.shape[1] == 1:
        z = logits.reshape(-1)
        sign = 1.0 if class_names.index(explain) == 1 else -1.0
        if method == "regression":
            vec, m = fit_regression_direction(w, sign * z, seed=seed)
            m["stability"] = split_half_cosine(w, sign * z, seed=seed, regression=True)
        else:
            vec, m = fit_linear_direction(w, (sign * z) > 0, seed=seed)
            m["stability"] = split_half_cosine(w, (sign * z) > 0, seed=seed)
        return [Direction("classifier", "classifier", vec, {"method": method, **m})], []
    pred = logits.argmax(axis=1)
    out, skipped = [], []
    for k, name in enumerate(class_names):
        try:
            vec, m = fit_linear_direction(w, pred == k, seed=seed)
        except DirectionFitError as exc:
            skipped.append({"name": f"classifier:{name}", "reason": str(exc)})
            continue
        m["stability"] = split_half_cosine(w, pred == k, seed=seed)
        out.append(Direction(f"classifier:{name}", "classifier", vec, {"method": method, **m}))
    if not out:
        raise DirectionFitError(f"no class direction could be fitted: {skipped}")
    return out, skipped


def within_strata(w: np.ndarray, strata: np.ndarray | None) -> np.ndarray:
    """``w`` with each stratum's mean replaced by the grand mean: what differs within
    strata (None: ``w`` unchanged)."""
    if strata is None:
        return w
    strata = np.asarray(strata).astype(str)
    out = np.array(w, dtype=np.float64, copy=True)
    grand = out.mean(axis=0)
    for s in np.unique(strata):
        rows = strata == s
        out[rows] += grand - out[rows].mean(axis=0)
    return out


def metadata_directions(
    w: np.ndarray,
    meta: pd.DataFrame,
    columns: list[str],
    *,
    groups: np.ndarray | None = None,
    strata: np.ndarray | None = None,
    seed: int = 0,
    min_per_class: int = 5,
) -> tuple[list[Direction], list[dict]]:
    """For each metadata column and value: a direction (value vs rest) fitted on the inverted
    real tiles' latents ``w``, within ``strata`` (e.g. the label: ``within_strata``), its
    held-out figures and stability over folds and halves of ``groups`` (slides or patients;
    None: tiles are split as independent). Returns the directions and the ones not
    estimable, with reasons."""
    missing = [c for c in columns if c not in meta.columns]
    if missing:
        raise KeyError(f"metadata columns {missing} are not in the cohort ({list(meta.columns)})")
    x = within_strata(w, strata)
    out, skipped = [], []
    for col in columns:
        values = meta[col].astype(str).to_numpy()
        levels = sorted(set(values))
        if len(levels) == 2:
            levels = levels[1:]  # value vs rest: one direction for a binary column
        for value in levels:
            name = f"meta:{col}={value}"
            y = values == value
            try:
                if groups is None:
                    vec, m = fit_linear_direction(x, y, seed=seed, min_per_class=min_per_class)
                else:
                    vec, m = fit_grouped_direction(
                        x, y, groups, seed=seed, min_per_class=min_per_class
                    )
            except DirectionFitError as exc:
                skipped.append({"name": name, "reason": str(exc)})
                continue
            m["stability"] = split_half_cosine(x, y, groups=groups, seed=seed)
            m["stratified"] = strata is not None
            out.append(Direction(name, "metadata", vec, {"column": col, "value": value, **m}))
    return out, skipped


def principal_directions(w: np.ndarray, k: int) -> list[Direction]:
    """The top-``k`` principal directions of W (GANSpace-style)."""
    pca = PCA(n_components=k).fit(w)
    return [
        Direction(f"pc:{i + 1}", "pc", unit(v), {"explained_variance_ratio": float(r)})
        for i, (v, r) in enumerate(zip(pca.components_, pca.explained_variance_ratio_, strict=True))
    ]


def covariance_directions(w: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """``k`` random unit directions drawn from N(0, Σ) with Σ the covariance of the latents
    ``w`` [N, D]: directions as W itself spreads, the null of "specific to this direction"."""
    wc = w - w.mean(axis=0)
    cov = wc.T @ wc / max(len(w) - 1, 1)
    evals, evecs = np.linalg.eigh(cov)
    root = (evecs * np.sqrt(np.clip(evals, 0, None))) @ evecs.T
    v = np.random.default_rng(seed).standard_normal((k, w.shape[1])) @ root
    return np.stack([unit(x) for x in v])


def permuted_values(
    values: np.ndarray, groups: np.ndarray, strata: np.ndarray | None, rng: np.random.Generator
) -> np.ndarray:
    """Tile values after shuffling whole groups' (slides') values among the groups of the
    same stratum: a null with the design's slides, label balance and confound intact."""
    groups = np.asarray(groups).astype(str)
    per_group = pd.DataFrame({"g": groups, "v": values, "s": strata if strata is not None else 0})
    first = per_group.drop_duplicates("g")
    new = {}
    for _, block in first.groupby("s", sort=True):
        new |= dict(zip(block["g"], rng.permutation(block["v"].to_numpy()), strict=True))
    return np.array([new[g] for g in groups])


def permutation_cosines(
    w: np.ndarray,
    values: np.ndarray,
    value: str,
    groups: np.ndarray,
    references: np.ndarray,
    *,
    strata: np.ndarray | None = None,
    n_perm: int = 200,
    seed: int = 0,
    min_per_class: int = 5,
) -> np.ndarray:
    """|cosine| between each reference direction [R, D] and the direction of ``value`` vs
    rest refitted (within ``strata``) on slide-level shuffles of ``values``: [n_perm, R],
    NaN rows for shuffles that leave a class too small to fit."""
    rng = np.random.default_rng(seed)
    x = within_strata(w, strata)
    out = np.full((n_perm, len(references)), np.nan)
    for i in range(n_perm):
        y = permuted_values(np.asarray(values).astype(str), groups, strata, rng) == value
        if min(y.sum(), (~y).sum()) < min_per_class:
            continue
        out[i] = np.abs(references @ logistic_normal(x, y.astype(int)))
    return out
