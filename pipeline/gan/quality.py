"""The generator's quality bar, measured: do samples look like the tiles in the numbers the
later stages rely on (nuclei, colour), and how far apart are they (SWD)?"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pipeline.features.nuclei import mean_solidity
from pipeline.features.registry import unwrap_circular
from pipeline.gan.loop import RAW_PREFIX
from pipeline.gan.metrics import layout_correlation, swd

SHAPE_STATS = ("nuclear_solidity",)  # nuclear shape, which no analysis feature measures
COLOUR_STATS = ("mean_R", "mean_G", "mean_B")
LAYOUT_MARGIN = 0.1  # samples may share at most this much more layout than the reals
# The analysis moves latents along straight lines: the features must be near-linear in w.
# Median cross-validated R² over the features; see docs/results.md.
# End to end (tests/tasks/test_known_answer.py): generators at 0.87 and 0.74 keep the
# planted biomarkers; 0.54 and 0.13 lose them.
LINEARITY_MIN = 0.7
W_SPREAD_MIN = 0.5  # analysis features' SD at constant noise over the reals' SD (median)
# What the analysis needs of W to tell features apart (docs/reports.md, "Generator gate"):
# W's variance spread over several dimensions, and samples (at constant noise) whose features
# vary as independently of each other as the real tiles' do.
W_PR_MIN = 8.0  # participation ratio of W's covariance
FEATURE_PR_RATIO_MIN = 0.8  # samples' feature participation ratio over the reals'
PAIR_GAP_MAX = 0.3  # largest |corr_samples − corr_reals| over feature pairs


def tiles_modality(tiles: np.ndarray) -> str:
    """RGB tiles [N, H, W, 3] are histology, grey ones radiology."""
    return "histology" if tiles.shape[-1] == 3 else "radiology"


def bar_stats(features: Sequence[str] | None = None) -> tuple[str, ...]:
    """Every per-tile statistic the bar compares: the features the analysis measures along
    a shift (``features``, default every registered feature of both modalities, plugins
    included) plus ``SHAPE_STATS`` and ``COLOUR_STATS`` for histology."""
    from pipeline.features import feature_names

    names = features or [*feature_names("histology"), *feature_names("radiology")]
    return tuple(dict.fromkeys([*names, *SHAPE_STATS, *COLOUR_STATS]))


def tile_stats(
    tiles: np.ndarray, mpp: float, features: Sequence[str] | None = None
) -> pd.DataFrame:
    """Per tile the statistics of the bar. RGB tiles (histology): the analysis features
    (``features``, default all registered), nuclear solidity and the mean of each colour
    channel; grey tiles (radiology): the analysis features."""
    from pipeline.features import compute_features, feature_names

    modality = tiles_modality(tiles)
    names = [n for n in (features or feature_names(modality)) if n in feature_names(modality)]
    if modality == "radiology":
        return compute_features(tiles, mpp, names, modality=modality)
    shape = _SolidityOf()  # reads the features' own segmentation: one per tile
    table = compute_features(tiles, mpp, names, context=shape, modality=modality)
    table[SHAPE_STATS[0]] = shape.values()
    colour = tiles.reshape(len(tiles), -1, 3).mean(axis=1)  # [N, 3]
    for k, name in enumerate(COLOUR_STATS):
        table[name] = colour[:, k]
    return table


class _SolidityOf:
    """A histology context factory for ``compute_features`` that also takes each tile's
    nuclear solidity (not an analysis feature) from the nuclei its features segmented,
    keeping one context alive at a time."""

    def __init__(self) -> None:
        self._done: list[float] = []
        self._last: Any = None

    def __call__(self, rgb: np.ndarray, mpp: float) -> Any:
        from pipeline.features.histology import TileContext

        self._finish()
        self._last = TileContext(rgb, mpp)
        return self._last

    def _finish(self) -> None:
        if self._last is not None:
            self._done.append(mean_solidity(self._last.props))
            self._last = None

    def values(self) -> np.ndarray:
        """Solidity per tile, in order."""
        self._finish()
        return np.asarray(self._done, dtype=np.float64)


def panel_indices(groups: Sequence[Any] | np.ndarray, k: int) -> np.ndarray:
    """Up to ``k`` row indices that show every group (slide) before any group shows twice:
    round robin over the groups in order of first appearance; returned in row order."""
    labels = pd.Series(np.asarray(groups))
    members = list(labels.groupby(labels, sort=False).indices.values())
    picked: list[int] = []
    depth = 0
    while len(picked) < k and any(depth < len(m) for m in members):
        picked += [int(m[depth]) for m in members if depth < len(m)]
        depth += 1
    return np.sort(np.asarray(picked[:k], dtype=np.int64))


def compare(real: pd.Series, fake: pd.Series) -> dict[str, Any]:
    """One statistic against the bar: the samples' mean within one SD of the reals' mean
    (``|z| <= 1``) and their SD within a factor 2 of the reals' (``sd_ratio``); NaNs (a tile
    without nuclei has no nuclear size) are skipped."""
    rm, rs, fm, fs = (float(v) for v in (real.mean(), real.std(), fake.mean(), fake.std()))
    z, ratio = (fm - rm) / max(rs, 1e-12), fs / max(rs, 1e-12)
    return {
        "real_mean": rm,
        "real_sd": rs,
        "fake_mean": fm,
        "fake_sd": fs,
        "z": z,
        "sd_ratio": ratio,
        "passed": bool(abs(z) <= 1 and 0.5 <= ratio <= 2),
    }


def _layout_check(reals: np.ndarray, fakes: np.ndarray) -> dict[str, Any]:
    """Samples must not be more alike in layout than the reals (tiles cut at random from
    tissue share none; aligned radiographs share their anatomy)."""
    rl, fl = layout_correlation(reals), layout_correlation(fakes)
    return {"real": rl, "fake": fl, "passed": bool(fl <= rl + LAYOUT_MARGIN)}


def latent_linearity(
    w: np.ndarray, stats: pd.DataFrame, folds: int = 5, seed: int = 0
) -> dict[str, float]:
    """How linear each statistic is in the latent space: the cross-validated R² of a ridge
    regression from w [N, w_dim] to each column of ``stats`` (one row per sample; NaN rows
    skipped; NaN when too few rows or constant). The analysis fits straight directions in W
    and moves along them, so a feature that no linear map of w predicts cannot change
    steadily along any direction (the "linear separability" of Karras et al. 2019)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_score

    out: dict[str, float] = {}
    for c in stats.columns:
        y = stats[c].to_numpy(np.float64)
        ok = np.isfinite(y)
        if ok.sum() < 4 * folds or np.ptp(y[ok]) == 0:
            out[c] = float("nan")
            continue
        model = RidgeCV(alphas=np.logspace(-1, 3, 5))
        cv = KFold(folds, shuffle=True, random_state=seed)
        out[c] = float(cross_val_score(model, w[ok], y[ok], cv=cv, scoring="r2").mean())
    return out


def _w_features(
    samples: np.ndarray, mpp: float, features: Sequence[str] | None, ref: pd.DataFrame
) -> pd.DataFrame:
    """The analysis features of ``samples`` drawn at constant noise (as the analysis draws
    them), circular ones unwrapped about the reals' (``ref``) mean."""
    from pipeline.features import compute_features, feature_names

    modality = tiles_modality(samples)
    names = [n for n in (features or feature_names(modality)) if n in feature_names(modality)]
    table = compute_features(samples, mpp, names, modality=modality)
    return unwrap_circular(table, modality, ref=ref)


def _linearity_check(w: np.ndarray, table: pd.DataFrame) -> dict[str, Any]:
    """The analysis features of samples of ``w`` at constant noise (``table``) must be
    near-linear in w: median R² >= ``LINEARITY_MIN``."""
    r2 = latent_linearity(w, table)
    finite = [v for v in r2.values() if math.isfinite(v)]
    median = float(np.median(finite)) if finite else float("nan")
    return {
        "median_r2": median,
        "min_median_r2": LINEARITY_MIN,
        "r2": r2,
        "passed": bool(median >= LINEARITY_MIN),
    }


def _spread_check(real: pd.DataFrame, table: pd.DataFrame) -> dict[str, Any]:
    """At constant noise, where only w varies, the analysis features must still spread: the
    median over the features of their SD over the reals' SD >= ``W_SPREAD_MIN``. The analysis
    moves along w, so variety that only the noise inputs make is out of its reach; a
    generator can pass every per-tile check at random noise and draw one tile at constant
    noise (the M1N fine-tune: median x0.03, the shipped generator x0.75; docs/results.md).
    The median, as for linearity: fine texture and sharpness may rightly come from the noise."""
    ratio = {
        c: float(table[c].std() / max(float(real[c].std()), 1e-12))
        for c in table.columns
        if c in real.columns
    }
    finite = [v for v in ratio.values() if math.isfinite(v)]
    median = float(np.median(finite)) if finite else float("nan")
    return {
        "sd_ratio": ratio,
        "median_sd_ratio": median,
        "min_median_sd_ratio": W_SPREAD_MIN,
        "passed": bool(median >= W_SPREAD_MIN),
    }


def participation_ratio(cov: np.ndarray) -> float:
    """(Σλ)² / Σλ² of a covariance (or correlation) matrix: how many dimensions its variance
    is spread over (1: one direction holds it all; D: isotropic)."""
    lam = np.clip(np.linalg.eigvalsh(np.asarray(cov, dtype=np.float64)), 0, None)
    return float(lam.sum() ** 2 / max((lam**2).sum(), 1e-300))


def latent_geometry(w: np.ndarray) -> dict[str, float]:
    """W's ``w_participation_ratio`` and ``w_pcs_90``, the principal components holding 90 %
    of its variance, from latents [N, w_dim]."""
    cov = np.cov(np.asarray(w, dtype=np.float64), rowvar=False)
    lam = np.sort(np.clip(np.linalg.eigvalsh(cov), 0, None))[::-1]
    share = np.cumsum(lam) / max(lam.sum(), 1e-300)
    return {
        "w_participation_ratio": participation_ratio(cov),
        "w_pcs_90": int(np.searchsorted(share, 0.9) + 1),
    }


def feature_independence(real: pd.DataFrame, samples: pd.DataFrame) -> dict[str, Any]:
    """How independently the samples' features vary, against the real tiles': the
    participation ratio of the features' correlation matrix in each (``feature_pr_ratio`` =
    samples ÷ reals) and the feature pair whose correlation differs most (``worst_pair``,
    ``worst_pair_corr_gap`` = |corr_samples − corr_reals|). Features constant or missing in
    either set are left out."""
    cols = [
        c
        for c in real.columns
        if c in samples.columns and real[c].std() > 0 and samples[c].std() > 0
    ]
    if len(cols) < 2:
        return {
            "feature_pr_ratio": float("nan"),
            "worst_pair": None,
            "worst_pair_corr_gap": float("nan"),
            "features": cols,
        }
    cr, cs = real[cols].corr().fillna(0.0), samples[cols].corr().fillna(0.0)
    gap = (cs - cr).abs().to_numpy(copy=True)
    np.fill_diagonal(gap, -1.0)
    i, j = np.unravel_index(int(np.argmax(gap)), gap.shape)
    pr_r, pr_s = participation_ratio(cr.to_numpy()), participation_ratio(cs.to_numpy())
    return {
        "real_feature_pr": pr_r,
        "sample_feature_pr": pr_s,
        "feature_pr_ratio": pr_s / pr_r,
        "worst_pair": [cols[i], cols[j]],
        "worst_pair_corr_gap": float(gap[i, j]),
        "worst_pair_corr_real": float(cr.iloc[i, j]),
        "worst_pair_corr_samples": float(cs.iloc[i, j]),
        "features": cols,
    }


def latent_space_checks(w: np.ndarray, real: pd.DataFrame, samples: pd.DataFrame) -> dict[str, Any]:
    """The generator gate's figures (``latent_geometry``, ``feature_independence`` of samples
    at constant noise) with each threshold and whether it holds."""
    geo, ind = latent_geometry(w), feature_independence(real, samples)
    checks = {
        "w_participation_ratio": (geo["w_participation_ratio"], W_PR_MIN, "min"),
        "feature_pr_ratio": (ind["feature_pr_ratio"], FEATURE_PR_RATIO_MIN, "min"),
        "worst_pair_corr_gap": (ind["worst_pair_corr_gap"], PAIR_GAP_MAX, "max"),
    }
    passed = {
        k: bool(v >= t if kind == "min" else v <= t) if math.isfinite(v) else False
        for k, (v, t, kind) in checks.items()
    }
    return {
        **geo,
        **ind,
        "thresholds": {k: t for k, (_, t, _) in checks.items()},
        "checks_passed": passed,
        "passed": all(passed.values()),
    }


def quality_report(
    reals: np.ndarray,
    fakes: np.ndarray,
    mpp: float,
    seed: int = 0,
    features: Sequence[str] | None = None,
    latents: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Compare uint8 [N, H, W, C] reals and samples.

    The bar (``compare``) for each statistic of ``tile_stats``: every feature the analysis
    measures (``features``, default all registered for the modality); for RGB (histology)
    also nuclear solidity and the per-tile mean of each colour channel. And the samples'
    layout correlation at most 0.1 above the reals' (no shared arrangement,
    ``layout_correlation``). With ``latents`` = (w, samples of w at constant noise), also
    the features' linearity in w (``latent_linearity``; median R² >= ``LINEARITY_MIN``) and
    their spread there (``_spread_check``; median SD ratio >= ``W_SPREAD_MIN``).
    Returns the figures and ``passed``.
    """
    modality = tiles_modality(reals)
    r = unwrap_circular(tile_stats(reals, mpp, features), modality)
    f = unwrap_circular(tile_stats(fakes, mpp, features), modality, ref=r)
    checks: dict[str, Any] = {c: compare(r[c], f[c]) for c in r.columns}
    checks["layout_corr"] = _layout_check(reals, fakes)
    if latents is not None:
        w, samples = latents
        table = _w_features(samples, mpp, features, ref=r)
        checks["w_linearity"] = _linearity_check(w, table)
        checks["w_spread"] = _spread_check(r, table)
    report = {
        "n_real": len(reals),
        "n_fake": len(fakes),
        "checks": checks,
        "swd": swd(reals, fakes, seed=seed),
        "passed": all(c["passed"] for c in checks.values()),
    }
    if latents is not None:  # recorded beside the bar: the analysis' generator gate judges it
        report["latent_space"] = latent_space_checks(w, r[table.columns], table)
    return report


class StatsTracker:
    """The per-tile part of the bar, cheap enough for every metric tick of training: called
    with uint8 samples, returns per statistic of ``tile_stats`` the samples' mean, its
    distance from the reals' mean in reals' SDs (``<stat>_z``; the bar wants |z| <= 1) and
    the ratio of SDs (``<stat>_sd_ratio``; the bar wants 0.5 to 2)."""

    def __init__(
        self, reals: np.ndarray, mpp: float, features: Sequence[str] | None = None
    ) -> None:
        self.mpp, self.features = mpp, features
        self.modality = tiles_modality(reals)
        self.real = unwrap_circular(tile_stats(reals, mpp, features), self.modality)
        self.real_layout = layout_correlation(reals)

    @property
    def keys(self) -> tuple[str, ...]:
        """The metrics a tick's score needs: every statistic's z, the layout excess and the
        linearity and spread excesses."""
        return (
            *(f"{c}_z" for c in self.real.columns),
            "layout_excess",
            "linearity_excess",
            "spread_excess",
        )

    def __call__(
        self, fakes: np.ndarray, latents: tuple[np.ndarray, np.ndarray] | None = None
    ) -> dict[str, float]:
        """Statistics of ``fakes``; with ``latents`` (w, samples of w at constant noise) also
        the features' median R² in w (``w_linearity``) and ``linearity_excess``."""
        fake = unwrap_circular(
            tile_stats(fakes, self.mpp, self.features), self.modality, ref=self.real
        )
        out: dict[str, float] = {}
        for c in self.real.columns:
            cmp = compare(self.real[c], fake[c])
            out[c], out[f"{c}_z"], out[f"{c}_sd_ratio"] = (
                cmp["fake_mean"],
                cmp["z"],
                cmp["sd_ratio"],
            )
        # > 0: the samples share more layout than the bar allows, in units of its margin
        shared = layout_correlation(fakes) - self.real_layout - LAYOUT_MARGIN
        out["layout_excess"] = shared / LAYOUT_MARGIN
        if latents is not None:
            w, samples = latents
            table = _w_features(samples, self.mpp, self.features, ref=self.real)
            r2 = _linearity_check(w, table)["median_r2"]
            out["w_linearity"] = r2
            # > 0: below the bar, in units of it (R² 0 scores 1, like |z| = 2); no feature
            # measurable (NaN) cannot show linearity either
            out["linearity_excess"] = (
                LINEARITY_MIN - (r2 if math.isfinite(r2) else 0.0)
            ) / LINEARITY_MIN
            spread = _spread_check(self.real, table)["median_sd_ratio"]
            out["w_spread"] = spread
            # > 0: below the bar, scored like an SD ratio (|log2| over 1); none measurable
            # (NaN) scores 1, like a ratio of a quarter
            out["spread_excess"] = (
                max(0.0, math.log2(W_SPREAD_MIN / max(spread, 1e-12)))
                if math.isfinite(spread)
                else 1.0
            )
        return out


def snapshot_score(
    metrics: Mapping[str, float], prefix: str = "", required: Sequence[str] = ()
) -> tuple[float, float] | None:
    """How good a training tick's G_ema is, lower is better; ``None`` without SWD.
    ``prefix=RAW_PREFIX`` scores the raw G from its ``raw_*`` metrics instead.

    First how far the tracked statistics lie outside the bar (``StatsTracker``): the largest
    excess of ``|<stat>_z|`` over 1, of ``|log2 <stat>_sd_ratio|`` over 1, of the shared
    layout over its margin (``layout_excess``), of the features' non-linearity in w
    (``linearity_excess``) or of their lack of spread at constant noise (``spread_excess``),
    0 when all are within and without a tracker;
    then SWD: the snapshot choice of the StyleGAN papers (best FID) with the bar the later
    stages need. ``None`` too when a ``required`` metric is missing (``StatsTracker.keys``: a
    tick of a resumed run measured by an older bar must not compete).
    """
    if any(f"{prefix}{k}" not in metrics for k in required):
        return None
    d = metrics.get(f"{prefix}swd")
    if d is None or not math.isfinite(d):
        return None
    bar = bar_stats()
    z = [float(metrics[k]) for c in bar if (k := f"{prefix}{c}_z") in metrics]
    ratio = [float(metrics[k]) for c in bar if (k := f"{prefix}{c}_sd_ratio") in metrics]
    excess = [abs(v) - 1.0 for v in z] + [abs(math.log2(max(v, 1e-12))) - 1.0 for v in ratio]
    for k in ("layout_excess", "linearity_excess", "spread_excess"):
        if f"{prefix}{k}" in metrics:
            excess.append(float(metrics[f"{prefix}{k}"]))
    if any(not math.isfinite(e) for e in excess):
        return None
    return (max([0.0, *excess]), float(d))


def best_net(
    metrics: Mapping[str, float], required: Sequence[str] = ()
) -> tuple[tuple[float, float], str] | None:
    """The better of a tick's two generators by ``snapshot_score``: ``(score, "G_ema")`` or,
    when the raw G was measured too (``raw_*`` metrics) and scores lower, ``(score, "G")``.
    On short runs G_ema can lag a fast-moving G and average its fine detail away."""
    found = [
        (s, net)
        for net, prefix in (("G_ema", ""), ("G", RAW_PREFIX))
        if (s := snapshot_score(metrics, prefix, required)) is not None
    ]
    return min(found, key=lambda f: f[0]) if found else None  # a tie keeps G_ema
