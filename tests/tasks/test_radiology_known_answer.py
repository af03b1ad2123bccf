"""End to end on the synthetic CT cohort with a planted factor, GAN included (``stylepath
run`` with configs/radiology_demo.yaml): tile → train-gan → train-classifier → predict →
invert → analyze → report.

Planted (pipeline/synthetic/ct.py): fatty-liver (steatosis) slices have a darker liver
(5–30 HU against 55–70 HU); site, file format, anatomy jitter and noise are drawn independently
of the label. So the classifier direction, toward steatosis, must lower ``intensity_mean`` —
and that must be its largest feature effect — and it must not be aligned with the site. Site
B is noisier (25 against 10 HU): its direction must raise sharpness and texture contrast and
leave the intensity alone. One image of the cohort is a DICOM without pixel
data: it fails with its reason and the rest completes.

Runtime (docs/radiology.md), 2-core development machine: 5 min 10 s nearly quiet (the GAN's
10 kimg 3 min 22 s of it), 8 min 18 s at load 3–8, 11 min 24 s at load 11–20.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from pipeline.config import load_config
from pipeline.io.dicom_writer import save_dicom
from pipeline.io.tile_store import TileStore
from tasks.make_cohort import make_ct_cohort
from tasks.run import run_all

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def analysed(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("ct_known")
    table = make_ct_cohort(root / "cohort", n_images=240, seed=0)
    bad = pydicom.dcmread(root / "cohort" / "images" / "ct_0000.dcm")
    del bad.PixelData
    save_dicom(root / "cohort" / "images" / "no_pixels.dcm", bad)
    cohort = pd.read_csv(table)
    extra = {**cohort.iloc[0].to_dict(), "slide_id": "no_pixels", "path": "images/no_pixels.dcm"}
    pd.concat([cohort, pd.DataFrame([extra])]).to_csv(table, index=False)
    cfg = load_config(
        REPO / "configs" / "radiology_demo.yaml", [f"cohort={table}", f"workdir={root / 'work'}"]
    )
    manifest = run_all(cfg)
    return cfg, json.loads(manifest.read_text())


def test_every_stage_ran_with_one_grey_channel(analysed) -> None:
    cfg, manifest = analysed
    stages = {s["name"]: s for s in manifest["stages"]}
    print({k: (v["status"], round(v["seconds"], 1)) for k, v in stages.items()})
    assert all(s["status"] == "ran" for s in stages.values()), manifest["stages"]
    tile = stages["tile"]["summary"]
    assert (tile["ok"], tile["failed"], tile["tiles"]) == (240, 1, 240)
    assert "DICOM without pixel data" in tile["failures"]["no_pixels"]
    slides = TileStore(cfg.workdir / "tiles").read_slides().set_index("slide_id")
    assert "DICOM without pixel data" in slides.loc["no_pixels", "error"]
    assert TileStore(cfg.workdir / "tiles").tile_shape() == (32, 1)
    gen = json.loads((cfg.workdir / "gan" / "generator.json").read_text())
    assert gen["spec"]["img_channels"] == 1 and gen["kimg"] >= 10
    # Training tracks the bar's radiology statistics for G_ema and the raw G.
    last = pd.read_parquet(cfg.workdir / "gan" / "metrics.parquet").iloc[-1]
    assert {
        "intensity_mean_z",
        "sharpness_sd_ratio",
        "layout_excess",
        "raw_intensity_mean_z",
    } <= set(last.index), last.index
    card = json.loads((cfg.workdir / "classifier" / "model.json").read_text())
    assert card["channels"] == 1 and len(card["mean"]) == 1
    assert stages["train-classifier"]["summary"]["val_auc_slide"] > 0.9
    inv = stages["invert"]["summary"]
    assert inv["n_failed"] == 0 and inv["median_ssim"] > 0.3, inv
    assert (cfg.workdir / "report" / "index.html").is_file()


def test_known_answer_liver_attenuation(analysed) -> None:
    cfg, _ = analysed
    out = cfg.workdir / "analysis"
    dirs = pd.read_parquet(out / "directions.parquet").set_index("name")
    eff = pd.read_parquet(out / "feature_effects.parquet")
    clf = eff[eff["direction"] == "classifier"].set_index("feature").sort_values("raw_rank")
    print(dirs[["auc", "accuracy", "sigma"]])
    print(clf[["effect", "ci_low", "ci_high", "p_value", "raw_rank", "specific_z", "specific"]])
    assert dirs.loc["classifier", "auc"] > 0.8  # W explains the classifier linearly
    # The planted factor is the top effect, with the right sign: toward steatosis, darker.
    assert clf.index[0] == "intensity_mean"
    assert clf.loc["intensity_mean", "effect"] < 0 and clf.loc["intensity_mean", "ci_high"] < 0
    # Moving along the direction moves the prediction toward steatosis.
    shifts = pd.read_parquet(out / "shifts.parquet")
    p = shifts[shifts["direction"] == "classifier"].groupby("alpha")["prediction"].mean()
    assert p.is_monotonic_increasing and p.iloc[-1] - p.iloc[0] > 0.5, p
    # No planted bias: the site (noise level) is independent of the label, so the classifier
    # direction is not aligned with the site direction beyond chance, and projecting the site
    # out leaves the prediction change intact.
    bias = pd.read_parquet(out / "cohort_bias.parquet")
    cos = bias[(bias["section"] == "cosine") & (bias["other"] == "meta:site=B")].iloc[0]
    cond = bias[bias["section"] == "conditional"].iloc[0]
    print(cos[["cosine", "null_q99"]].to_dict(), cond[["survived"]].to_dict())
    assert not cos["above_null"] and cond["survived"] > 0.8
    # The site's planted factor (noise level) is found along the site direction: noise and
    # texture features up, not the liver's intensity.
    site = eff[eff["direction"] == "meta:site=B"].set_index("feature")
    print(site.sort_values("raw_rank")[["effect", "ci_low", "ci_high", "raw_rank"]])
    for feat in ("sharpness", "texture_contrast"):
        assert site.loc[feat, "ci_low"] > 0.2, site.loc[feat]
    assert abs(site.loc["intensity_mean", "effect"]) < site.loc["sharpness", "effect"] / 2


def test_grey_cohorts_get_the_radiology_probes(analysed) -> None:
    """1-channel tiles: the window, contrast, blur and noise probes run; no stain probe."""
    cfg, _ = analysed
    probes = pd.read_parquet(cfg.workdir / "analysis" / "perturbations.parquet")
    families = set(probes["family"])
    assert {"window_level", "window_width", "blur", "noise"} <= families
    assert not families & {"hematoxylin", "eosin", "stain_normalise"}
    v = pd.read_parquet(cfg.workdir / "analysis" / "verdicts.parquet")
    print(v[["direction", "verdict", "reasons"]])
    assert set(v["verdict"]) <= {"supported", "weak", "not_supported"}


def test_rerun_skips_every_stage(analysed) -> None:
    cfg, _ = analysed
    again = json.loads(run_all(cfg).read_text())
    status = {s["name"]: s["status"] for s in again["stages"]}
    assert all(v == "skipped" for k, v in status.items() if k != "tile"), again["stages"]
