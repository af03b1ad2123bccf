"""End to end on a small synthetic cohort with planted answers, from the shipped generator:
tile → train-classifier → predict → invert → analyze → report (`stylepath run`).

Planted (pipeline/synthetic): tumor slides have denser, larger nuclei; centers stain
differently; tumor slides are mostly at center A (confounded). The classifier reads the
nuclei, not the stain: rendered again in the other center's stain, its logit moves far less
than with the planted nuclei (checked below without any generator). So the classifier
direction must raise nuclear density and size, and its prediction change must survive
projecting the center direction out (no site shortcut to find).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config import config_from_dict
from pipeline.io.parquet import read_provenance
from pipeline.synthetic import stain_counterfactual_logits
from tasks.make_cohort import make_cohort
from tasks.run import run_all

REPO = Path(__file__).resolve().parents[2]
COLOUR = {"hematoxylin_mean", "eosin_mean", "hue_mean", "saturation_mean", "brightness"}


@pytest.fixture(scope="module")
def analysed(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("known")
    table = make_cohort(root / "cohort", n_slides=8, seed=0, size_um=1024)
    cfg = config_from_dict(
        {
            "cohort": str(table),
            "workdir": str(root / "work"),
            "tiling": {"mpp": 1.0, "size": 64, "min_tissue": 0.5},
            "storage": {"tiles_per_chunk": 16, "tiles_per_shard": 256},
            "ray": {"num_cpus": 2},
            "classifier": {
                "train": {"epochs": 2, "batch_size": 64, "num_workers": 1, "cpus_per_worker": 2},
                "predict": {"heatmaps": "auto", "concurrency": 2, "batch_size": 128},
            },
            "inversion": {
                "generator": str(REPO / "models" / "demo_tiny64"),
                "space": "W",
                "encoder": {"steps": 60, "batch": 32, "width": 32, "num_cpus": 2},
                "refine": {"steps": 10, "stats_weight": 100.0},
                "selection": {"mode": "per_slide", "n": 12},
                "replicates": 3,
                "batch_size": 48,
                "concurrency": 2,
            },
            "analysis": {
                "n_samples": 1500,
                "tiles_per_slide": 12,
                "n_boot": 500,
                "metadata": ["center"],
                "batch_size": 24,
            },
        }
    )
    manifest = run_all(cfg)
    return cfg, json.loads(manifest.read_text())


def test_every_stage_ran_and_a_rerun_skips_them(analysed) -> None:
    cfg, manifest = analysed
    status = {s["name"]: s["status"] for s in manifest["stages"]}
    assert status["train-gan"] == "skipped"  # the shipped generator
    assert all(
        status[s] == "ran"
        for s in ["tile", "train-classifier", "predict", "invert", "analyze", "report"]
    ), manifest["stages"]
    assert manifest["versions"]["torch"] and manifest["ray_resources"].get("CPU") == 2
    again = json.loads(run_all(cfg).read_text())
    skipped = {s["name"]: s["status"] for s in again["stages"]}
    assert all(v == "skipped" for k, v in skipped.items() if k != "tile"), again["stages"]


def test_known_answer_biomarkers(analysed) -> None:
    cfg, _ = analysed
    out = cfg.workdir / "analysis"
    eff = pd.read_parquet(out / "feature_effects.parquet")
    clf = eff[eff["direction"] == "classifier"].set_index("feature")
    print(
        clf.sort_values("raw_rank")[
            ["effect", "ci_low", "ci_high", "p_value", "raw_rank", "specific_z", "specific"]
        ]
    )
    # Top-ranked: in the upper half of the 14 features by |effect|, positive toward tumor
    # (brightness and the tissue's haematoxylin follow: more and larger nuclei darken it).
    # Effects are now measured on the tiles that pass the fidelity gate only.
    for feat in ("nuclei_density", "nuclear_area_mean"):
        row = clf.loc[feat]
        assert row["raw_rank"] <= len(clf) // 2 and row["ci_low"] > 0, row
    colour = clf.loc[sorted(COLOUR)]
    assert ((colour["ci_low"] > 0) | (colour["ci_high"] < 0)).any()
    bias = pd.read_parquet(out / "cohort_bias.parquet")  # the bias report is there in full
    assert {"cosine", "conditional", "group_effect"} <= set(bias["section"]), bias["section"]
    # The expectation the trust gates add: with the shipped generator the direction is not
    # supported — its W is nearly one-dimensional (every random direction moves the same
    # features, so none is specific) and few reconstructions are identifiable — and the
    # verdict says so. A generator and inversion that pass the gates change this line.
    v = pd.read_parquet(out / "verdicts.parquet").set_index("direction").loc["classifier"]
    print(v)
    assert v["verdict"] in ("weak", "not_supported") and "W participation ratio" in v["reasons"]


def test_demo_control_names_the_planted_nuclei_or_abstains(analysed) -> None:
    """The demo's control (pipeline/synthetic/controls.py, fixed before the gates were tuned):
    the built-in classifier of planted nuclear density and size is explained by one of them,
    or the run abstains with reasons; never by stain alone."""
    from pipeline.synthetic.controls import judge

    cfg, _ = analysed
    out = cfg.workdir / "analysis"
    verdicts = pd.read_parquet(out / "verdicts.parquet")
    effects = pd.read_parquet(out / "feature_effects.parquet")
    print(verdicts.T)
    assert judge("demo", verdicts, effects) == []


def test_stain_control_on_the_demo_cohort(analysed, tmp_path: Path) -> None:
    """The ``stain_he`` control (pipeline/synthetic/controls.py, fixed before tuning): a
    TorchScript black box reading mean eosin OD, on the demo cohort whose stain the generator
    draws, must be explained by a stain feature and no nuclear one, or abstain."""
    from pipeline.synthetic.controls import judge
    from tasks.controls import _blackbox

    cfg, _ = analysed
    work = tmp_path / "work"
    shutil.copytree(
        cfg.workdir, work, symlinks=True, ignore=shutil.ignore_patterns("analysis", "report")
    )
    c = _blackbox(config_from_dict({**cfg.dump(), "workdir": str(work)}), "stain_he")
    run_all(c)
    verdicts = pd.read_parquet(work / "analysis" / "verdicts.parquet")
    effects = pd.read_parquet(work / "analysis" / "feature_effects.parquet")
    print(verdicts.T, effects[effects["direction"] == "classifier"].head(6).T)
    assert judge("stain_he", verdicts, effects) == []
    from pipeline.synthetic.controls import judge_probes

    probes = pd.read_parquet(work / "analysis" / "perturbations.parquet")
    assert judge_probes("eosin", probes) == []
    agreement = pd.read_parquet(work / "analysis" / "agreement.parquet")
    print(agreement)  # eosin_mean, specific along the eosin reader's direction: agree


def test_known_answer_bias_no_site_shortcut(analysed) -> None:
    cfg, _ = analysed
    out = cfg.workdir / "analysis"
    bias = pd.read_parquet(out / "cohort_bias.parquet")
    cos = bias[
        (bias["section"] == "cosine")
        & (bias["direction"] == "classifier")
        & bias["other"].str.startswith("meta:center=")
    ].iloc[0]
    cond = bias[(bias["section"] == "conditional") & (bias["direction"] == "classifier")]
    print(cos[["other", "cosine", "null_q99"]], cond[["other", "logit_slope", "survived"]])
    # No site shortcut (the stain counterfactual below: the stain moves the logit by ~10 % of
    # what the planted nuclei do): the classifier direction is not aligned with the center
    # direction beyond the permutation null (center shuffled between slides within label
    # strata), and ≥ 90 % of the prediction change survives projecting the center direction
    # out at equal steps. Measured 2026-12-07 with the shipped generator: cosine 0.19 against
    # the null's q99 0.36, 112 % survived. A generator that mixes stain into the nuclei fails
    # both (the 52 kimg generator shipped before it: cosine −0.35, 73 % survived; docs/results.md).
    assert not cos["above_null"], cos
    assert len(cond) == 1 and cond["logit_slope"].iloc[0] > 0
    assert cond["survived"].iloc[0] > 0.9, cond


def test_the_planted_answer_is_what_the_classifier_uses(analysed) -> None:
    """The premise of the known answer, checked without any generator: each slide rendered
    again with only its planted nuclear size and/or density changed (same seed, stain and
    center) moves the trained classifier's logit toward tumor. Here: size alone +1.07,
    density alone +1.19, both +3.60 (the demo's longer-trained classifier leans on size:
    +7.4, −0.55, +12.3). So the shift must show both. Rendered in the other center's stain
    instead, nuclei unchanged, the logit moves far less on average (−0.11: +0.33 / +0.54 on
    normal slides, −0.76 / −0.58 on tumor ones): no site shortcut for the bias report to
    find."""
    from tasks.controls import counterfactual_means, explained_logits

    cfg, _ = analysed
    score = explained_logits(cfg)
    mean = counterfactual_means(cfg)
    print(mean)
    base = mean["normal", "normal"]
    assert mean["normal", "tumor"] - base > 0.5 and mean["tumor", "normal"] - base > 0.5
    assert mean["tumor", "tumor"] - base > 2
    specs = pd.read_csv(cfg.cohort).to_dict("records")
    stains = stain_counterfactual_logits(specs, score, cfg.tiling, ["A", "B"])
    swap = stains.pivot_table("logit", "slide_id", "stain_center")
    site = float((swap["A"] - swap["B"]).mean())  # the stain alone, over all slides
    print(stains.pivot_table("logit", "center", "stain_center"), site)
    planted = min(mean["normal", "tumor"], mean["tumor", "normal"]) - base
    assert abs(site) < 0.5 * planted, (site, planted)


@pytest.mark.xfail(
    strict=True,
    reason="finding (2026-12-07): the built-in classifier (2 epochs) moves its logit by 0.74 "
    "under eosin x0.7 and by 0.56 under hematoxylin x1.3, more than half the 1.07 that the "
    "planted size alone makes in the renderer's counterfactuals; the rule was fixed first",
)
def test_probes_demo_classifier_reads_nuclei_more_than_stain(analysed) -> None:
    """The probes' control for the demo (fixed before tuning): without any generator, no
    stain change of the real tiles moves the logit by half of what the planted nuclei do."""
    from pipeline.synthetic.controls import judge_probes
    from tasks.controls import planted_effect

    cfg, _ = analysed
    probes = pd.read_parquet(cfg.workdir / "analysis" / "perturbations.parquet")
    cols = ["perturbation", "strength", "effect", "ci_low", "ci_high", "flip_share"]
    print(probes[probes["group"] == "all"][cols])
    assert judge_probes("nuclei", probes, planted_effect(cfg)) == []


def test_reports_are_readable_and_carry_provenance(analysed) -> None:
    duckdb = pytest.importorskip("duckdb")
    cfg, _ = analysed
    out = cfg.workdir / "analysis"
    for name in (
        "directions",
        "shifts",
        "feature_effects",
        "cohort_bias",
        "verdicts",
        "fidelity",
        "null_effects",
        "perturbations",
    ):
        path = out / f"{name}.parquet"
        n = duckdb.sql(f"select count(*) from '{path}'").fetchall()[0][0]
        assert n == len(pd.read_parquet(path)) > 0
        prov = read_provenance(path)
        assert prov["config_hash"] and prov["code_version"].startswith("0.")
    shifts = pd.read_parquet(out / "shifts.parquet")
    assert not shifts.duplicated(["direction", "replicate", "tile_id", "alpha"]).any()
    assert set(shifts["replicate"]) == {0, 1, 2}


def test_report_renders_in_headless_chromium(analysed, tmp_path: Path) -> None:
    cfg, _ = analysed
    page = cfg.workdir / "report" / "index.html"
    assert page.is_file() and list((cfg.workdir / "report" / "gifs").glob("*.gif"))
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian chromium is not installed (.ci/run installs it)")
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    total = int(dom.split('data-images-total="')[1].split('"')[0])
    loaded = int(dom.split('data-images-loaded="')[1].split('"')[0])
    assert total > 5 and loaded == total


def test_analyze_bad_inputs_fail_before_any_work(analysed) -> None:
    from pipeline.config import config_from_dict as from_dict
    from tasks.analyze import AnalysisInputError, run_analyze

    cfg, _ = analysed
    before = {p: p.stat().st_mtime_ns for p in (cfg.workdir / "analysis").rglob("*")}
    data = cfg.dump()
    with pytest.raises(AnalysisInputError, match="no column"):
        run_analyze(from_dict({**data, "analysis": {**data["analysis"], "metadata": ["site"]}}))
    with pytest.raises(AnalysisInputError, match="unknown"):
        run_analyze(from_dict({**data, "analysis": {**data["analysis"], "features": ["x"]}}))
    after = {p: p.stat().st_mtime_ns for p in (cfg.workdir / "analysis").rglob("*")}
    assert after == before  # nothing written


def test_analyze_survives_an_actor_killed_mid_part(analysed, tmp_path: Path, monkeypatch) -> None:
    """An analysis actor dies on its first part: the part is redone by a fresh actor and the
    shifts equal the clean run's, none lost or duplicated."""
    from tasks.analyze import run_analyze
    from tasks.pool import FAULT_ENV

    cfg, _ = analysed
    work = tmp_path / "work"
    shutil.copytree(cfg.workdir, work, symlinks=True)
    shutil.rmtree(work / "analysis")
    marker = tmp_path / "fault.marker"
    monkeypatch.setenv(FAULT_ENV, str(marker))
    run_analyze(config_from_dict({**cfg.dump(), "workdir": str(work)}))
    assert marker.is_file()
    key = ["direction", "replicate", "tile_id", "alpha"]
    a = pd.read_parquet(cfg.workdir / "analysis" / "shifts.parquet")
    b = pd.read_parquet(work / "analysis" / "shifts.parquet")
    assert not b.duplicated(key).any() and len(a) == len(b)
    pd.testing.assert_frame_equal(
        a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
    )


def test_new_slides_cost_only_their_work(analysed, tmp_path: Path) -> None:
    """Scheduled re-analysis: two new slides in the cohort → only they are tiled, scored,
    inverted and shifted; the models are reused; cohort-level results are re-aggregated."""
    from pipeline.io.inversion_store import InversionStore
    from tasks.make_cohort import grow_cohort

    cfg, first = analysed
    work = tmp_path / "work"
    shutil.copytree(cfg.workdir, work, symlinks=True)  # the analysed workdir, untouched
    grown = grow_cohort(cfg.cohort, tmp_path / "grown", n_new=2, seed=11, size_um=1024)
    cfg2 = config_from_dict({**cfg.dump(), "cohort": str(grown), "workdir": str(work)})
    run = json.loads(run_all(cfg2).read_text())
    st = {s["name"]: s for s in run["stages"]}
    old = {s["name"]: s for s in first["stages"]}
    assert st["tile"]["status"] == "ran" and st["tile"]["summary"]["new_or_changed_slides"] == 2
    assert st["tile"]["summary"]["tiles_read"] == (
        st["tile"]["summary"]["tiles"] - old["tile"]["summary"]["tiles"]
    )
    assert st["train-classifier"]["status"] == "skipped", st["train-classifier"]
    assert "2 new slide(s) not trained on" in st["train-classifier"]["reason"]
    assert st["predict"]["summary"]["reused"] == old["predict"]["summary"]["tiles"]
    inv = st["invert"]["summary"]
    assert inv["n_skipped"] == old["invert"]["summary"]["n_selected"] and inv["n_inverted"] == 24
    assert st["analyze"]["status"] == "ran" and st["report"]["status"] == "ran"
    # classifier-direction shifts of the 8 old slides + their real-tile features: reused
    assert st["analyze"]["summary"]["parts_reused"] >= 16

    def table(workdir: Path, name: str) -> pd.DataFrame:
        return pd.read_parquet(workdir / name)

    p1, p2 = table(cfg.workdir, "predictions.parquet"), table(work, "predictions.parquet")
    assert len(p2) == st["tile"]["summary"]["tiles"] and p2["tile_id"].is_unique
    pd.testing.assert_frame_equal(
        p2[p2["tile_id"].isin(p1["tile_id"])].reset_index(drop=True), p1.reset_index(drop=True)
    )
    a, b = InversionStore(cfg.workdir / "inversion"), InversionStore(work / "inversion")
    ta, tb = a.read_table(), b.read_table()
    assert tb["tile_id"].is_unique and set(ta["tile_id"]) < set(tb["tile_id"])
    old_rows = tb.set_index("tile_id").loc[ta["tile_id"], "latent_row"].to_numpy()
    np.testing.assert_array_equal(b.read_latents(old_rows), a.read_latents())
    s1 = table(cfg.workdir, "analysis/shifts.parquet")
    s2 = table(work, "analysis/shifts.parquet")
    # the new slides' tiles went through the fidelity gate; exactly the faithful ones shifted
    fid = table(work, "analysis/fidelity.parquet")
    assert fid["slide_id"].str.startswith("new_").sum() == 24
    assert set(s2["tile_id"]) == set(fid.loc[fid["faithful"], "tile_id"])
    key = ["direction", "replicate", "tile_id", "alpha"]
    assert not s2.duplicated(key).any()
    # The old tiles' classifier-direction frames are kept as they were. (The fidelity gate's
    # reference tiles come from the whole cohort, so a new slide can move an old tile across
    # the gate; that slide's part then holds other tiles and is redone. Compared: the old
    # slides whose faithful tiles are the same in both runs.)
    fid1 = table(cfg.workdir, "analysis/fidelity.parquet")
    same = [
        sid
        for sid, g in fid1.groupby("slide_id")
        if set(g.loc[g["faithful"], "tile_id"])
        == set(fid.loc[(fid["slide_id"] == sid) & fid["faithful"], "tile_id"])
    ]
    c1 = s1[(s1["direction"] == "classifier") & s1["slide_id"].isin(same)]
    c2 = s2[(s2["direction"] == "classifier") & s2["slide_id"].isin(same)]
    assert len(c1) > 0
    pd.testing.assert_frame_equal(
        c2.sort_values(key).reset_index(drop=True), c1.sort_values(key).reset_index(drop=True)
    )


class GreenScore(torch.nn.Module):
    """A stand-in for a new classifier: the logit grows with the tile's mean green."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 40.0 * (x[:, 1].mean(dim=(1, 2)) - 0.62)


def test_a_new_classifier_rescores_what_it_leaves_unchanged(analysed, tmp_path: Path) -> None:
    """Images and features do not depend on the classifier: a new one re-scores the parts of
    the directions it leaves as they were (metadata, random) and the real tiles, keeping their
    features, and shifts only along its own new directions; the reports equal a fresh run's.
    (Which tiles are shifted depends on the classifier too — the fidelity gate compares its
    predictions on tile and reconstruction — so the part checked is one both runs shift.)"""
    from tasks.analyze import run_analyze

    cfg, _ = analysed
    green = tmp_path / "green.pt"
    torch.jit.save(torch.jit.script(GreenScore()), str(green))
    meta, mark = "meta:center=B", -123.0
    d = cfg.dump()
    green_cfg = {**d, "classifier": {**d["classifier"], "model": str(green)}}

    def run(name: str, prepare) -> object:
        work = tmp_path / name
        shutil.copytree(cfg.workdir, work, symlinks=True)
        prepare(work)
        return run_analyze(config_from_dict({**green_cfg, "workdir": str(work)}))

    fresh = run("fresh", lambda work: shutil.rmtree(work / "analysis"))
    old_parts = {p.name for p in (cfg.workdir / "analysis" / "parts").glob("shift-*.parquet")}
    fresh_parts = (tmp_path / "fresh" / "analysis" / "parts").glob("shift-*.parquet")
    both = sorted(
        p
        for p in fresh_parts
        if p.name in old_parts and (pd.read_parquet(p)["direction"] == meta).all()
    )
    assert both, "no metadata-direction part shifted under both classifiers"
    first = pd.read_parquet(both[0])
    marked, rep = set(first["tile_id"]), int(first["replicate"].iloc[0])  # any replicate's part

    def mark_one(work: Path) -> None:  # re-scoring must keep this part's features
        part = work / "analysis" / "parts" / both[0].name
        pd.read_parquet(part).assign(sharpness=mark).to_parquet(part)

    s = run("rescored", mark_one)
    assert fresh.n_parts_rescored == fresh.n_parts_reused == 0
    assert "classifier" in s.directions and meta in s.directions
    red = pd.read_parquet(cfg.workdir / "analysis" / "shifts.parquet")
    # at least the real-tile part of every slide, and only parts another classifier scored
    assert s.n_parts_rescored == s.n_parts_reused >= red["slide_id"].nunique()
    key = ["direction", "replicate", "tile_id", "alpha"]

    def shifts(name: str) -> pd.DataFrame:
        df = pd.read_parquet(tmp_path / name / "analysis" / "shifts.parquet")
        return df.sort_values(key).reset_index(drop=True)

    got, want = shifts("rescored"), shifts("fresh")
    in_mark = (got["direction"] == meta) & got["tile_id"].isin(marked) & (got["replicate"] == rep)
    assert (got.loc[in_mark, "sharpness"] == mark).all() and in_mark.sum() == 5 * len(marked)
    got.loc[in_mark, "sharpness"] = want.loc[in_mark, "sharpness"]
    pd.testing.assert_frame_equal(got, want)  # new scores everywhere, the same features
    both_tiles = set(red["tile_id"]) & set(got["tile_id"])
    old = red[(red["direction"] == meta) & red["tile_id"].isin(both_tiles)]
    new = got[(got["direction"] == meta) & got["tile_id"].isin(both_tiles)]
    old, new = (t.sort_values(key).reset_index(drop=True) for t in (old, new))
    feats = [c for c in old if c not in {*key, "slide_id", "logit", "prediction"}]
    pd.testing.assert_frame_equal(new[feats], old[feats])
    assert not np.allclose(new["logit"], old["logit"])


class Negative(torch.nn.Module):
    """A classifier that calls every tile normal: its samples hold one class."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0].mean(dim=(1, 2)) * 0.0 - 5.0


def test_no_faithful_tile_or_one_class_gives_reasons_not_a_crash(analysed, tmp_path) -> None:
    """Every tile below the fidelity gate, or a classifier whose samples are all one class:
    the analysis and the report finish, and each verdict says why it is not supported."""
    from tasks.analyze import run_analyze
    from tasks.report import run_report

    cfg, _ = analysed
    neg = tmp_path / "negative.pt"
    torch.jit.save(torch.jit.script(Negative()), str(neg))
    d = cfg.dump()
    cases = {
        "strict": {**d, "analysis": {**d["analysis"], "fidelity": {"min_ssim": 0.99}}},
        "one_class": {**d, "classifier": {**d["classifier"], "model": str(neg)}},
    }
    for name, data in cases.items():
        work = tmp_path / name
        shutil.copytree(cfg.workdir, work, symlinks=True)
        c = config_from_dict({**data, "workdir": str(work)})
        run_analyze(c)
        assert run_report(c).is_file()
        v = pd.read_parquet(work / "analysis" / "verdicts.parquet").set_index("direction")
        print(name, v[["verdict", "reasons"]])
        assert (v["verdict"] == "not_supported").all() and v["reasons"].str.len().gt(0).all()
        if name == "strict":
            assert v["reasons"].str.contains("no tile passed the fidelity gate").all()
            assert v["reasons"].str.contains("SSIM < 0.99").all()
        else:
            assert "not estimable: degenerate fit" in v.loc["classifier", "reasons"]
