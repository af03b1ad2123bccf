"""The trust gates' statistics on planted answers: specificity against random directions
(calibrated under the null, powerful on a real signal), grouped and stratified metadata fits,
the permutation null of cosines, survival at equal steps, replicate-aware CIs, the fidelity
gate, W's geometry and the verdict rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.directions import (
    covariance_directions,
    fit_grouped_direction,
    fit_linear_direction,
    metadata_directions,
    permutation_cosines,
    project_out,
    split_half_cosine,
    unit,
)
from pipeline.gan.quality import feature_independence, latent_geometry, participation_ratio
from pipeline.inversion.fidelity import fidelity_gate, reference_ssim
from pipeline.reports.bias import conditional_rows
from pipeline.reports.effects import feature_effects, per_tile_slopes
from pipeline.reports.specificity import bh_qvalues, specificity
from pipeline.reports.verdicts import GATES, judge_direction, reach, verdict_rows

DIM, ALPHAS = 16, (-2.0, -1.0, 0.0, 1.0, 2.0)


def shifts_along(
    dirs: dict[str, np.ndarray],
    gain: np.ndarray,
    cov: np.ndarray,
    seed: int,
    slides: int = 8,
    tiles: int = 5,
    noise: float = 0.05,
) -> pd.DataFrame:
    """Frames of tiles shifted along ``dirs`` (by α SDs of W along each), features linear in
    w (``gain`` [F, D]) plus measurement noise: what the analysis' shift parts hold."""
    rng = np.random.default_rng(seed)
    w0 = rng.multivariate_normal(np.zeros(DIM), cov, size=slides * tiles)
    rows = []
    for name, d in dirs.items():
        sigma = float(np.sqrt(d @ cov @ d))
        for t, w in enumerate(w0):
            for a in ALPHAS:
                f = gain @ (w + a * sigma * d) + rng.normal(0, noise, len(gain))
                rows.append(
                    {
                        "direction": name,
                        "tile_id": f"t{t}",
                        "slide_id": f"s{t // tiles}",
                        "alpha": a,
                        **{f"f{k}": v for k, v in enumerate(f)},
                    }
                )
    return pd.DataFrame(rows)


def specific_features(
    direction: np.ndarray, gain: np.ndarray, cov: np.ndarray, seed: int, k: int = 16
) -> pd.DataFrame:
    w_samples = np.random.default_rng(seed + 1).multivariate_normal(np.zeros(DIM), cov, 4000)
    randoms = covariance_directions(w_samples, k, seed=seed)
    dirs = {"d": direction, **{f"random:{i}": v for i, v in enumerate(randoms)}}
    shifts = shifts_along(dirs, gain, cov, seed)
    feats = [f"f{i}" for i in range(len(gain))]
    slopes = per_tile_slopes(shifts, feats)
    sd = pd.Series(1.0, index=feats)
    is_rand = slopes["direction"].str.startswith("random")
    eff = feature_effects(slopes[~is_rand], sd, n_boot=300, seed=seed)
    null = feature_effects(slopes[is_rand], sd, n_boot=100, seed=seed)
    sigma = {k: float(np.sqrt(v @ cov @ v)) for k, v in dirs.items()}
    eff["sigma"], null["sigma"] = eff["direction"].map(sigma), null["direction"].map(sigma)
    return specificity(eff, null).set_index("feature")


def anisotropic(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A W whose variance lies mostly along its first axis, and 6 features: 4 move with that
    axis (as nuclei, stain and brightness do in an entangled W), 2 with minor axes only."""
    rng = np.random.default_rng(seed)
    cov = np.diag([9.0, *np.full(DIM - 1, 0.3)])
    gain = np.zeros((6, DIM))
    gain[:4, 0] = rng.uniform(0.5, 1.0, 4)
    gain[4, 3], gain[5, 5] = 1.0, 1.0
    return cov, gain


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_direction_drawn_like_the_null_has_no_specific_feature(seed: int) -> None:
    cov, gain = anisotropic(seed)
    w = np.random.default_rng(seed + 7).multivariate_normal(np.zeros(DIM), cov, 4000)
    d = covariance_directions(w, 1, seed=seed + 100)[0]  # a random direction, as the null's
    spec = specific_features(d, gain, cov, seed)
    assert not spec["specific"].any(), spec[["effect", "specific_z", "specific_q"]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_dominant_axis_is_not_specific_and_a_minor_one_is(seed: int) -> None:
    """Along W's dominant axis every entangled feature moves a lot, but no more than along
    random directions (they mostly follow that axis too): nothing specific. Along a minor
    axis, the one feature that follows it moves far more than along random directions."""
    cov, gain = anisotropic(seed)
    dominant = specific_features(np.eye(DIM)[0], gain, cov, seed)
    assert (dominant.loc[["f0", "f1", "f2", "f3"], "effect"].abs() > 0.5).all()
    assert not dominant["specific"].any(), dominant[["effect", "specific_z"]]
    minor = specific_features(np.eye(DIM)[3], gain, cov, seed)
    assert minor.loc["f4", "specific"] and minor.loc["f4", "rank"] == 1, minor
    assert not minor.drop(index="f4")["specific"].any()


def test_bh_qvalues() -> None:
    q = bh_qvalues(np.array([0.01, 0.04, 0.03, np.nan, 0.5]))
    np.testing.assert_allclose(q[[0, 1, 2, 4]], [0.04, 0.16 / 3, 0.16 / 3, 0.5])
    assert np.isnan(q[3])


def slide_clustered(
    n_slides: int = 16,
    per: int = 30,
    seed: int = 0,
    center_shift: float = 2.0,
    slide_sd: float = 0.5,
):
    """Tiles whose latents cluster by slide (a slide effect), a slide-level label and a
    center that is 75 % confounded with it; the label shifts w along axis 0, the center
    along axis 1."""
    rng = np.random.default_rng(seed)
    label = np.array(["tumor"] * (n_slides // 2) + ["normal"] * (n_slides // 2))
    center = np.array(["A"] * 6 + ["B"] * 2 + ["B"] * 6 + ["A"] * 2)
    slide_mu = rng.normal(0, slide_sd, (n_slides, DIM))
    slide_mu[:, 0] += np.where(label == "tumor", 3.0, -3.0)
    slide_mu[:, 1] += np.where(center == "B", center_shift, -center_shift)
    s = np.repeat(np.arange(n_slides), per)
    w = slide_mu[s] + rng.normal(0, 0.3, (len(s), DIM))
    meta = pd.DataFrame({"slide_id": [f"s{i}" for i in s], "label": label[s], "center": center[s]})
    return w, meta


def test_grouped_fits_do_not_leak_slide_identity() -> None:
    """A metadata value drawn at random per slide: splitting tiles leaks each slide's cluster
    into the test set (AUC near 1); folds of whole slides do not (AUC near chance)."""
    w, meta = slide_clustered(seed=3)
    rng = np.random.default_rng(0)
    noise = dict(zip(meta["slide_id"].unique(), rng.permutation(["x", "y"] * 8), strict=True))
    y = meta["slide_id"].map(noise).to_numpy() == "y"
    _, leaky = fit_linear_direction(w, y)
    _, grouped = fit_grouped_direction(w, y, meta["slide_id"].to_numpy())
    assert leaky["auc"] > 0.9 and grouped["auc"] < 0.75, (leaky, grouped)
    assert grouped["n_groups"] == 16


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stratified_center_direction_is_not_the_label_direction(seed: int) -> None:
    """A center with no effect of its own, 75 % confounded with the label: fitted across
    labels its direction leans toward the label's; fitted within label strata it does not."""
    w, meta = slide_clustered(seed=seed, center_shift=0.0, slide_sd=0.05)
    groups = meta["slide_id"].to_numpy()
    (raw,), _ = metadata_directions(w, meta, ["center"], groups=groups)
    (within,), _ = metadata_directions(
        w, meta, ["center"], groups=groups, strata=meta["label"].to_numpy()
    )
    (label,), _ = metadata_directions(w, meta, ["label"], groups=groups)
    leak, kept = abs(float(raw.vector @ label.vector)), abs(float(within.vector @ label.vector))
    assert leak > 0.15 and kept < 0.1, (leak, kept)
    assert within.metrics["stratified"] and within.metrics["split"] == "groups"


def test_permutation_null_keeps_the_design() -> None:
    """The null of |cos(label direction, center direction)| from slide-level shuffles within
    label strata: a true center direction orthogonal to the label sits inside it."""
    w, meta = slide_clustered(seed=2)
    groups, strata = meta["slide_id"].to_numpy(), meta["label"].to_numpy()
    label_dir = unit(np.eye(DIM)[0])[None]
    null = permutation_cosines(
        w, meta["center"].to_numpy(), "B", groups, label_dir, strata=strata, n_perm=100
    )
    assert null.shape == (100, 1) and np.isfinite(null).mean() > 0.9
    (within,), _ = metadata_directions(w, meta, ["center"], groups=groups, strata=strata)
    assert abs(float(within.vector @ label_dir[0])) <= np.nanquantile(null, 0.99)


def test_split_half_stability_separates_signal_from_noise() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4000, DIM))
    assert split_half_cosine(w, w[:, 0] + 0.3 * rng.standard_normal(4000) > 0) > 0.95
    assert abs(split_half_cosine(w, rng.random(4000) > 0.5)) < 0.5


def test_survived_at_equal_steps_is_the_cosine_for_a_linear_logit() -> None:
    """logit = 3·(w · d): along d' = d with one metadata direction projected out, moved by
    d's σ, the share of the logit slope left is cos(d, d')."""
    rng = np.random.default_rng(0)
    d = unit(rng.standard_normal(DIM))
    m = unit(d + rng.standard_normal(DIM))
    dc = project_out(d, [m])
    rows = []
    for t in range(40):
        w = rng.standard_normal(DIM)
        for name, v in (("classifier", d), ("cond", dc)):
            for a in ALPHAS:
                rows.append(
                    {
                        "direction": name,
                        "tile_id": f"t{t}",
                        "slide_id": f"s{t // 5}",
                        "replicate": 0,
                        "alpha": a,
                        "logit": 3 * (w + a * v) @ d,
                    }
                )
    out = conditional_rows(pd.DataFrame(rows), {"cond": "classifier"}, n_boot=200).iloc[0]
    assert out["survived"] == pytest.approx(float(dc @ d), abs=1e-6)
    assert out["survived_ci_low"] <= out["survived"] <= out["survived_ci_high"]


def test_replicates_widen_the_interval() -> None:
    """Two replicates that disagree: the effect is their mean and the CI covers both."""
    rows = [
        {
            "direction": "d",
            "replicate": r,
            "tile_id": f"t{t}",
            "slide_id": f"s{t // 4}",
            "feature": "a",
            "slope": (1.0 if r == 0 else 2.0) + 0.01 * t,
        }
        for r in (0, 1)
        for t in range(32)
    ]
    one = feature_effects(pd.DataFrame(rows[:32]), pd.Series({"a": 1.0}), n_boot=400).iloc[0]
    two = feature_effects(pd.DataFrame(rows), pd.Series({"a": 1.0}), n_boot=400).iloc[0]
    assert two["effect"] == pytest.approx(1.655, abs=0.01) and two["n_replicates"] == 2
    assert two["ci_low"] < 1.2 and two["ci_high"] > 2.1 and one["ci_high"] < 1.4
    assert two["replicate_sd"] == pytest.approx(np.sqrt(0.5), abs=1e-6)


def test_fidelity_gate_needs_the_reconstruction_to_be_of_its_tile() -> None:
    """A reconstruction equal to its tile is identified; one generic image reconstructing
    every tile is about as like the others as its own and fails mostly (by chance 5 % pass);
    a changed prediction fails too."""
    from pipeline.inversion.losses import ssim

    g = torch.Generator().manual_seed(0)
    tiles = torch.rand(40, 3, 32, 32, generator=g)
    slides = np.array([f"s{i // 4}" for i in range(40)])
    generic = torch.rand(1, 3, 32, 32, generator=g).expand_as(tiles)
    table = pd.DataFrame(
        {
            "ssim": np.r_[ssim(tiles, tiles).numpy(), ssim(generic, tiles).numpy()],
            "ssim_reference": np.r_[
                reference_ssim(tiles, tiles, slides, slides, 0.95),
                reference_ssim(generic, tiles, slides, slides, 0.95),
            ],
            "prob_real": 0.9,
            "prob_recon": 0.9,
        }
    )
    table.loc[0, "prob_recon"] = 0.2
    out = fidelity_gate(table, max_prob_change=0.1, min_ssim=0.0, identity=True)
    assert out["faithful"][:40].tolist() == [False] + [True] * 39
    assert out.loc[0, "fidelity_reason"] == "|Δp| > 0.1"
    assert out["faithful"][40:].mean() <= 0.15
    assert (
        out.loc[40:][~out["faithful"][40:]]["fidelity_reason"]
        .str.contains("not identifiable")
        .all()
    )
    assert fidelity_gate(table, 0.1, -1.0, identity=False)["faithful"].sum() == 79


def test_latent_geometry_and_feature_independence() -> None:
    rng = np.random.default_rng(0)
    iso = rng.standard_normal((5000, DIM))
    one = np.outer(rng.standard_normal(5000), np.ones(DIM)) + 0.01 * iso
    assert latent_geometry(iso)["w_participation_ratio"] > 0.9 * DIM
    assert latent_geometry(one)["w_participation_ratio"] < 1.1
    assert latent_geometry(one)["w_pcs_90"] == 1
    assert participation_ratio(np.eye(4)) == pytest.approx(4)
    x = rng.standard_normal((500, 3))
    real = pd.DataFrame(x, columns=list("abc"))
    coupled = real.assign(b=real["a"] + 0.05 * rng.standard_normal(500))
    same = feature_independence(real, real)
    bad = feature_independence(real, coupled)
    assert same["worst_pair_corr_gap"] == 0 and same["feature_pr_ratio"] == pytest.approx(1)
    assert set(bad["worst_pair"]) == {"a", "b"} and bad["worst_pair_corr_gap"] > 0.9
    assert bad["feature_pr_ratio"] < 0.8


def test_verdict_rules() -> None:
    good = {
        "auc": 0.95,
        "stability": 0.97,
        "reach": 0.8,
        "n_specific": 3,
        "faithful_share": 0.9,
        "faithful_tiles": 200,
        "faithful_slides": 16,
        "w_participation_ratio": 12,
        "feature_pr_ratio": 0.9,
        "worst_pair_corr_gap": 0.2,
    }
    assert judge_direction(good) == ("supported", "")
    v, why = judge_direction(good | {"w_participation_ratio": 1.3})
    assert v == "weak" and why.startswith("W participation ratio 1.3 < 8")
    v, why = judge_direction(good | {"auc": 0.51, "stability": 0.8})
    assert v == "not_supported" and "fit AUC 0.51 < 0.7" in why and "stability 0.8 < 0.9" in why
    assert judge_direction(good | {"reach": None})[0] == "supported"  # not applicable
    assert judge_direction(good, blocked=["not estimable: one class"]) == (
        "not_supported",
        "not estimable: one class",
    )
    table = verdict_rows([{"direction": "classifier", "kind": "classifier", **good}])
    assert table.loc[0, "verdict"] == "supported" and len(table.columns) == 4 + len(GATES)


def test_reach_counts_tiles_that_cross_the_threshold() -> None:
    s = pd.DataFrame(
        {
            "direction": "d",
            "replicate": 0,
            "tile_id": np.repeat(["a", "b"], 3),
            "prediction": [0.1, 0.4, 0.6, 0.1, 0.2, 0.3],
        }
    )
    assert reach(s, "d") == 0.5 and np.isnan(reach(s, "other"))
