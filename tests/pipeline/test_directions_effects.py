"""Direction fitting in W, latent shifts and cohort feature effects on known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.directions import (
    Direction,
    DirectionFitError,
    classifier_directions,
    latent_sigma,
    metadata_directions,
    principal_directions,
    project_out,
    shift_latents,
)
from pipeline.io.parquet import read_parquet, write_parquet
from pipeline.reports.bias import (
    CONDITIONAL_COLUMNS,
    COSINE_COLUMNS,
    conditional_rows,
    cosine_rows,
)
from pipeline.reports.effects import feature_effects, group_effects, per_tile_slopes

DIM = 32


def planted(n: int = 2000, seed: int = 0):
    """Latents whose class is decided by a known unit direction (plus label noise)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, DIM)).astype(np.float32)
    true = np.zeros(DIM, np.float32)
    true[:2] = [0.6, 0.8]
    logit = 4 * (w @ true) + rng.normal(0, 0.3, n)
    return w, logit, true


def test_classifier_direction_recovers_the_planted_normal() -> None:
    w, logit, true = planted()
    for method in ("logistic", "regression"):
        (d,), _ = classifier_directions(w, logit, ["normal", "tumor"], "tumor", method=method)
        assert d.name == "classifier" and np.linalg.norm(d.vector) == pytest.approx(1, abs=1e-5)
        assert float(d.vector @ true) > 0.95 and d.metrics["auc"] > 0.95
    (d0,), _ = classifier_directions(w, logit, ["normal", "tumor"], "normal")
    assert float(d0.vector @ true) < -0.95  # toward the explained class


def test_multiclass_and_degenerate_fits() -> None:
    w, logit, true = planted()
    logits = np.stack([-logit, np.zeros_like(logit), logit], axis=1)
    dirs, skipped = classifier_directions(w, logits, ["a", "b", "c"], "c")
    assert [d.name for d in dirs] == ["classifier:a", "classifier:c"]
    assert skipped[0]["name"] == "classifier:b"  # never predicted: not estimable, reported
    assert float(dirs[1].vector @ true) > 0.9 and float(dirs[0].vector @ true) < -0.9
    with pytest.raises(DirectionFitError, match="degenerate"):
        classifier_directions(w, np.abs(logit) + 1, ["normal", "tumor"], "tumor")


def test_metadata_directions_and_not_estimable_groups() -> None:
    w, logit, true = planted()
    meta = pd.DataFrame(
        {"center": np.where(logit > 0, "A", "B"), "scanner": ["x"] * (len(w) - 3) + ["y"] * 3}
    )
    dirs, skipped = metadata_directions(w, meta, ["center", "scanner"])
    assert [d.name for d in dirs] == ["meta:center=B"]  # binary column: one direction
    assert float(dirs[0].vector @ true) < -0.95
    assert skipped[0]["name"] == "meta:scanner=y" and "degenerate" in skipped[0]["reason"]
    with pytest.raises(KeyError, match="site"):
        metadata_directions(w, meta, ["site"])


def test_pcs_null_shift_and_projection() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((500, DIM)) * np.r_[5.0, np.ones(DIM - 1)]
    (pc,) = principal_directions(w, 1)
    assert abs(pc.vector[0]) > 0.99
    d = np.eye(DIM, dtype=np.float32)[0]
    sigma = latent_sigma(w, d)
    assert sigma == pytest.approx(5.0, rel=0.1)
    shifted = shift_latents(w[:3].astype(np.float32), d, np.array([-1.0, 0.0, 2.0]), sigma)
    assert shifted.shape == (3, 3, DIM)
    np.testing.assert_allclose(shifted[:, 2, 0] - shifted[:, 1, 0], 2 * sigma, rtol=1e-5)
    wplus = np.repeat(w[:2, None].astype(np.float32), 4, axis=1)
    assert shift_latents(wplus, d, np.array([1.0]), sigma).shape == (2, 1, 4, DIM)
    mixed = project_out(np.array([0.6, 0.8] + [0.0] * (DIM - 2)), [d])
    assert mixed[0] == pytest.approx(0, abs=1e-6) and mixed[1] == pytest.approx(1)


def test_effects_slopes_ci_over_slides_and_groups() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for s in range(8):  # 8 slides × 5 tiles; feature a rises with α (slope 2), b is noise
        for t in range(5):
            for alpha in (-2.0, -1.0, 0.0, 1.0, 2.0):
                rows.append(
                    {
                        "direction": "classifier",
                        "tile_id": f"s{s}_t{t}",
                        "slide_id": f"s{s}",
                        "alpha": alpha,
                        "a": 2 * alpha + rng.normal(0, 0.1),
                        "b": rng.normal(0, 1.0),
                    }
                )
    shifts = pd.DataFrame(rows)
    slopes = per_tile_slopes(shifts, ["a", "b"])
    assert len(slopes) == 2 * 40
    eff = feature_effects(slopes, pd.Series({"a": 4.0, "b": 1.0}), n_boot=500)
    a = eff.set_index("feature").loc["a"]
    assert a["effect"] == pytest.approx(0.5, abs=0.02)  # slope 2 / SD 4
    assert a["ci_low"] > 0.45 and a["ci_high"] < 0.55 and a["p_value"] < 0.01
    assert a["raw_rank"] == 1 and a["n_slides"] == 8 and a["n_tiles"] == 40
    b = eff.set_index("feature").loc["b"]
    assert abs(b["effect"]) < 0.2 and b["raw_rank"] == 2 and b["ci_high"] - b["ci_low"] > 0.05
    groups = pd.Series({f"s{s}": "A" if s < 4 else "B" for s in range(8)} | {"s7": "C"})
    ge = group_effects(slopes, pd.Series({"a": 4.0, "b": 1.0}), groups, "center")
    rows_a = ge[ge.feature == "a"].set_index("group")
    assert rows_a.loc["A", "estimable"] and not rows_a.loc["C", "estimable"]
    assert rows_a.loc["A", "p_heterogeneity"] > 0.05  # same slope in every group


def test_bias_sections_keep_their_columns_without_a_classifier_direction(tmp_path) -> None:
    """No classifier direction (every sample in one class): the cosine and conditional
    sections have no rows but keep their columns, so cohort_bias.parquet has one schema and
    the report's column selections work (the report raised a KeyError before)."""
    meta_only = [Direction("meta:center=B", "metadata", np.eye(DIM, dtype=np.float32)[0])]
    cos = cosine_rows(meta_only, {})
    cond = conditional_rows(pd.DataFrame(columns=["direction", "tile_id", "alpha", "logit"]), {})
    assert cos.empty and list(cos.columns) == COSINE_COLUMNS
    assert cond.empty and list(cond.columns) == CONDITIONAL_COLUMNS
    groups = pd.DataFrame(
        {
            "direction": ["meta:center=B"],
            "feature": ["brightness"],
            "effect": [0.1],
            "section": ["group_effect"],
        }
    )
    write_parquet(pd.concat([groups, cos, cond], ignore_index=True), tmp_path / "bias.parquet")
    bias = read_parquet(tmp_path / "bias.parquet")
    assert set(COSINE_COLUMNS + CONDITIONAL_COLUMNS) <= set(bias.columns) and len(bias) == 1
    assert bias[bias["section"] == "cosine"][["direction", "other", "null_q99"]].empty
