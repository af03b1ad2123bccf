"""Fitting directions in W: the unit normal of a linear model separating latents.

As in Schutte et al. (and InterFaceGAN): sample latents, synthesise, score with the
classifier, fit a linear model in W; its unit normal is the direction that changes the
prediction. Held-out AUC says how well W linearly explains the classifier (or metadata).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score, roc_auc_score
from sklearn.model_selection import train_test_split


class DirectionFitError(ValueError):
    """A direction cannot be estimated (one class only, too few samples)."""


@dataclass(frozen=True)
class Direction:
    """A unit vector in W with how it was obtained and how well it fits."""

    name: str  # classifier, classifier:<class>, meta:<column>=<value>, pc:<k>
    kind: str  # classifier | metadata | pc
    vector: np.ndarray  # [w_dim], unit length
    metrics: dict[str, Any] = field(default_factory=dict)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n == 0:
        raise DirectionFitError("the fitted normal is zero or not finite")
    return (v / n).astype(np.float32)


def fit_linear_direction(w: np.ndarray, y: np.ndarray, *, seed: int = 0,
                         test_fraction: float = 0.25, min_per_class: int = 5,
                         c: float = 1.0) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
    """Logistic regression of binary ``y`` on latents ``w`` [N, D] → (unit normal pointing
    to y = 1, metrics: held-out AUC and accuracy, sample counts)."""
    y = np.asarray(y).astype(int)
    counts = np.bincount(y, minlength=2)
    if len(counts) > 2 or counts.min() < min_per_class:
        raise DirectionFitError(
            f"degenerate fit: class counts {counts.tolist()} (need ≥ {min_per_class} of each)"
        )
    w_tr, w_te, y_tr, y_te = train_test_split(w, y, test_size=test_fraction, stratify=y,
                                              random_state=seed)  # fmt: skip
    center = w_tr.mean(axis=0)
    model = LogisticRegression(C=c, max_iter=2000).fit(w_tr - center, y_tr)
    score = model.decision_function(w_te - center)
    metrics = {
        "auc": float(roc_auc_score(y_te, score)),
        "accuracy": float(accuracy_score(y_te, score > 0)),
        "n_train": len(y_tr), "n_test": len(y_te), "n_positive": int(counts[1]),
    }  # fmt: skip
    return _unit(model.coef_[0]), metrics


def fit_regression_direction(
    w: np.ndarray, target: np.ndarray, *, seed: int = 0, test_fraction: float = 0.25
) -> tuple[np.ndarray, dict[str, Any]]:
    """Ridge regression of a continuous ``target`` (e.g. the logit) on ``w`` → (unit normal
    pointing to larger targets, held-out R² and AUC of the fit against target > 0)."""
    w_tr, w_te, t_tr, t_te = train_test_split(w, target, test_size=test_fraction,
                                              random_state=seed)  # fmt: skip
    model = Ridge(alpha=1.0).fit(w_tr, t_tr)
    pred = model.predict(w_te)
    metrics: dict[str, Any] = {"r2": float(r2_score(t_te, pred)), "n_train": len(t_tr),
                               "n_test": len(t_te)}  # fmt: skip
    if 0 < (t_te > 0).sum() < len(t_te):
        metrics["auc"] = float(roc_auc_score(t_te > 0, pred))
    return _unit(model.coef_), metrics


def classifier_directions(w: np.ndarray, logits: np.ndarray, class_names: list[str],
                          explain: str, *, method: str = "logistic",
                          seed: int = 0) -> tuple[list[Direction], list[dict]]:  # fmt: skip
    """Directions from synthesised samples' latents ``w`` [N, D] and classifier logits [N] or
    [N, C]. Binary: one ``classifier`` direction toward ``explain``. Multi-class: one
    ``classifier:<class>`` direction per class (that class vs the rest); classes the model
    never (or always) predicts are returned as not estimable, with the reason. Raises
    ``DirectionFitError`` when no direction can be fitted at all."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 1 or logits.shape[1] == 1:
        z = logits.reshape(-1)
        sign = 1.0 if class_names.index(explain) == 1 else -1.0
        if method == "regression":
            vec, m = fit_regression_direction(w, sign * z, seed=seed)
        else:
            vec, m = fit_linear_direction(w, (sign * z) > 0, seed=seed)
        return [Direction("classifier", "classifier", vec, {"method": method, **m})], []
    pred = logits.argmax(axis=1)
    out, skipped = [], []
    for k, name in enumerate(class_names):
        try:
            vec, m = fit_linear_direction(w, pred == k, seed=seed)
        except DirectionFitError as exc:
            skipped.append({"name": f"classifier:{name}", "reason": str(exc)})
            continue
        out.append(Direction(f"classifier:{name}", "classifier", vec, {"method": method, **m}))
    if not out:
        raise DirectionFitError(f"no class direction could be fitted: {skipped}")
    return out, skipped


def metadata_directions(w: np.ndarray, meta: pd.DataFrame, columns: list[str], *,
                        groups: np.ndarray | None = None, seed: int = 0,
                        min_per_class: int = 5) -> tuple[list[Direction], list[dict]]:  # fmt: skip
    """For each metadata column and value: a direction (value vs rest) fitted on the inverted
    real tiles' latents. Returns the directions and the ones not estimable, with reasons."""
    missing = [c for c in columns if c not in meta.columns]
    if missing:
        raise KeyError(f"metadata columns {missing} are not in the cohort ({list(meta.columns)})")
    out, skipped = [], []
    for col in columns:
        values = meta[col].astype(str).to_numpy()
        levels = sorted(set(values))
        if len(levels) == 2:
            levels = levels[1:]  # value vs rest: one direction for a binary column
        for value in levels:
            name = f"meta:{col}={value}"
            try:
                vec, m = fit_linear_direction(w, values == value, seed=seed,
                                              min_per_class=min_per_class)  # fmt: skip
            except DirectionFitError as exc:
                skipped.append({"name": name, "reason": str(exc)})
                continue
            out.append(Direction(name, "metadata", vec, {"column": col, "value": value, **m}))
    return out, skipped


def principal_directions(w: np.ndarray, k: int) -> list[Direction]:
    """The top-``k`` principal directions of W (GANSpace-style)."""
    pca = PCA(n_components=k).fit(w)
    return [Direction(f"pc:{i + 1}", "pc", _unit(v),
                      {"explained_variance_ratio": float(r)})
            for i, (v, r) in enumerate(zip(pca.components_, pca.explained_variance_ratio_,
                                           strict=True))]  # fmt: skip


def random_cosine_null(dim: int, n: int = 10_000, seed: int = 0) -> dict[str, float]:
    """|cosine| between a fixed unit vector and random isotropic directions in ``dim``
    dimensions: the null for "are two directions related?"."""
    v = np.random.default_rng(seed).standard_normal((n, dim))
    cos = np.abs(v[:, 0]) / np.linalg.norm(v, axis=1)  # by symmetry: vs the first axis
    return {"q50": float(np.quantile(cos, 0.5)), "q95": float(np.quantile(cos, 0.95)),
            "q99": float(np.quantile(cos, 0.99))}  # fmt: skip
