"""Generator-free probes on rendered tiles with planted black boxes: each perturbation does
what it says, and the probes' controls (pipeline/synthetic/controls.judge_probes, fixed before
tuning) hold at three seeds — an eosin reader is sensitive to eosin and not to blur, a
sharpness reader the reverse."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config import TilingConfig
from pipeline.features import compute_features
from pipeline.probes.families import DEFAULT_STRENGTHS
from pipeline.probes.perturb import (
    Probe,
    apply_probe,
    probe_list,
    probe_scores,
    stain_normalise,
    stain_stats,
)
from pipeline.probes.stats import probe_effects
from pipeline.synthetic import plan_cohort, render_slide, tissue_tiles
from pipeline.synthetic.blackboxes import calibrated, tiles_tensor
from pipeline.synthetic.controls import judge_probes

TILING = TilingConfig(mpp=1.0, size=64, min_tissue=0.5)


def cohort_tiles(seed: int, n_slides: int = 6) -> tuple[np.ndarray, pd.DataFrame]:
    """Demo-renderer tiles at 1 µm/px of ``n_slides`` small slides, with their ids."""
    tiles, ids = [], []
    for spec in plan_cohort(n_slides, seed, size_um=384).to_dict("records"):
        t = tissue_tiles(
            render_slide({**spec, "mpp": 1.0, "width_px": 384, "height_px": 384}), TILING
        )[:12]
        tiles.append(t)
        ids += [
            {
                "tile_id": f"{spec['slide_id']}_{i}",
                "slide_id": spec["slide_id"],
                "center": spec["center"],
            }
            for i in range(len(t))
        ]
    return np.concatenate(tiles), pd.DataFrame(ids)


def scorer(model: torch.nn.Module):
    def score(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            z = model(tiles_tensor(tiles))
        return z.numpy(), torch.sigmoid(z).numpy()

    return score


@pytest.fixture(scope="module")
def tiles():
    return cohort_tiles(0)


def test_each_probe_moves_what_it_names(tiles) -> None:
    x, ids = tiles
    mpp = np.ones(len(x))
    base = compute_features(x, mpp, ["eosin_mean", "hematoxylin_mean", "sharpness", "brightness"])

    def feats(probe: Probe) -> pd.DataFrame:
        return compute_features(apply_probe(x, probe, mpp), mpp, list(base.columns))

    same = apply_probe(x, Probe("eosin", 1.0, 1.0), mpp)
    assert np.abs(same.astype(int) - x).max() <= 2  # the OD roundtrip, up to 8-bit rounding
    more_e, more_h = feats(Probe("eosin", 1.3, 1.0)), feats(Probe("hematoxylin", 1.3, 1.0))
    assert (more_e["eosin_mean"] > base["eosin_mean"]).mean() > 0.95
    assert (
        more_e["hematoxylin_mean"].sub(base["hematoxylin_mean"]).abs().mean()
        < 0.1 * (more_e["eosin_mean"] - base["eosin_mean"]).mean()
    )
    assert (more_h["hematoxylin_mean"] > base["hematoxylin_mean"]).mean() > 0.95
    assert (feats(Probe("blur", 1.0, 0.0))["sharpness"] < base["sharpness"]).all()
    assert (feats(Probe("brightness", 0.08, 0.0))["brightness"] > base["brightness"]).all()
    # blur is in µm: at 0.5 µm/px the same σ spans twice the pixels
    half = apply_probe(x, Probe("blur", 1.0, 0.0), np.full(len(x), 0.5))
    assert (
        np.abs(half.astype(int) - x).mean()
        > np.abs(apply_probe(x, Probe("blur", 1.0, 0.0), mpp).astype(int) - x).mean()
    )
    # Re-stained with the other center's stain, a tile's content (nuclei) stays and its
    # colour moves to the other center's: stain_normalise undoes the renderer's stain swap.
    a = (ids["center"] == "A").to_numpy()
    refs = {c: stain_stats(x[(ids["center"] == c).to_numpy()]) for c in ("A", "B")}
    moved = apply_probe(
        x[a],
        Probe("stain_normalise", 1.0, 0.0, "B"),
        mpp[a],
        targets=refs,
        groups=np.full(a.sum(), "A"),
    )
    assert (
        np.abs(stain_stats(moved)[:2] - refs["B"][:2]).sum()
        < 0.5 * np.abs(refs["A"][:2] - refs["B"][:2]).sum()
    )
    nuclei = ["nuclei_density", "nuclear_area_mean"]
    before = compute_features(x[a], mpp[a], nuclei)
    after = compute_features(moved, mpp[a], nuclei)
    assert (after - before).abs().median().max() < 0.15 * before.median().max()
    same = apply_probe(
        x[a],
        Probe("stain_normalise", 1.0, 0.0, "A"),
        mpp[a],
        targets=refs,
        groups=np.full(a.sum(), "A"),
    )
    assert np.abs(same.astype(int) - x[a]).max() <= 2


def test_stain_normalisation_reproduces_the_renderers_stain_swap() -> None:
    """The renderer's stain vectors are recovered from its tiles, and a slide rendered in
    center A's stain, re-stained with B's vectors, carries B's vectors (its amounts of stain
    stay A's: B's eosin ×1.45 is not part of the swap)."""
    from pipeline.synthetic import plan_cohort as plan

    specs = plan(4, 3, size_um=384).to_dict("records")

    def render(spec: dict, stain: str) -> np.ndarray:
        full = {**spec, "mpp": 1.0, "width_px": 384, "height_px": 384, "stain": stain}
        return tissue_tiles(render_slide(full), TILING)

    a = {s["slide_id"]: render(s, "standard") for s in specs}
    b = {s["slide_id"]: render(s, "purple") for s in specs}
    ra, rb = (stain_stats(np.concatenate(list(r.values()))) for r in (a, b))
    unit = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])
    assert np.abs(ra - unit / np.linalg.norm(unit, axis=1, keepdims=True)).max() < 0.05
    purple = np.array([[0.48, 0.76, 0.44], [0.30, 0.93, 0.06]])
    assert np.abs(rb - purple / np.linalg.norm(purple, axis=1, keepdims=True)).max() < 0.05
    for sid in a:
        assert np.abs(stain_stats(stain_normalise(a[sid], ra, rb)) - rb).max() < 0.05


def test_probe_list_follows_the_modality() -> None:
    hist = {p.family for p in probe_list(DEFAULT_STRENGTHS, "histology", ["A", "B"])}
    rad = {p.family for p in probe_list(DEFAULT_STRENGTHS, "radiology")}
    assert {"eosin", "stain_normalise", "blur"} <= hist and "window_level" not in hist
    assert not rad & {"eosin", "hematoxylin", "stain_normalise"} and "window_level" in rad
    grey = np.full((2, 16, 16, 1), 100, np.uint8)
    for p in probe_list(DEFAULT_STRENGTHS, "radiology"):
        assert apply_probe(grey, p, np.ones(2)).shape == grey.shape


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("reader", ["eosin", "sharpness"])
def test_probe_controls(reader: str, seed: int) -> None:
    x, ids = cohort_tiles(seed)
    model = calibrated(reader, x)
    probes = probe_list(DEFAULT_STRENGTHS, "histology", ["A", "B"])
    targets = {c: stain_stats(x[(ids["center"] == c).to_numpy()]) for c in ("A", "B")}
    scores = probe_scores(x, np.ones(len(x)), ids, probes, scorer(model), targets=targets)
    table = probe_effects(
        scores,
        {"center": ids.drop_duplicates("slide_id").set_index("slide_id")["center"]},
        n_boot=500,
    )
    print(
        table[table["group"] == "all"][
            ["perturbation", "strength", "effect", "ci_low", "ci_high", "flip_share"]
        ]
    )
    assert judge_probes(reader, table) == []
    assert set(table["group"]) == {"all", "center=A", "center=B"}


def test_a_strength_out_of_range_is_a_config_error_naming_the_key() -> None:
    from pipeline.config import ConfigError, config_from_dict

    base = {"cohort": "cohort.csv", "workdir": "work"}
    with pytest.raises(ConfigError, match=r"analysis\.probes\.eosin: .*outside the valid range"):
        config_from_dict({**base, "analysis": {"probes": {"eosin": [1.2, 5.0]}}})
    with pytest.raises(ConfigError, match=r"analysis\.probes\.blur"):
        config_from_dict({**base, "analysis": {"probes": {"blur": [-1.0]}}})
    cfg = config_from_dict({**base, "analysis": {"probes": {"jpeg": []}}})
    assert "jpeg" not in cfg.analysis.probes.strengths()
