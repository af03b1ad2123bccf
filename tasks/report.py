"""``stylepath report``: the HTML report of an analysed workdir (``workdir/report/index.html``,
self-contained) plus GIF strips per tile (``workdir/report/gifs/``). Runs in the driver: it
only re-synthesises a few strips and reads slide thumbnails."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.classifier.heatmaps import overlay
from pipeline.config import Config
from pipeline.directions import shift_latents
from pipeline.gan.generator import load_generator
from pipeline.io.files import atomic_write_text
from pipeline.io.heatmap_store import HeatmapStore
from pipeline.io.images import as_rgb, save_gif
from pipeline.io.parquet import read_parquet, read_provenance
from pipeline.io.paths import WorkPath
from pipeline.io.tile_store import TileStore
from pipeline.probes.perturb import PERTURBATIONS
from pipeline.probes.stats import PROBE_COLUMNS
from pipeline.reports.bias import CONDITIONAL_COLUMNS, COSINE_COLUMNS
from pipeline.reports.html import DirectionSection, Report, render, strip
from pipeline.reports.plots import dose_response, effects_chart, prediction_vs_alpha, slide_overview
from pipeline.slides.open import SlideError, open_slide
from tasks.analyze import OUT, AnalysisInputError, load_inverted
from tasks.stage import generator_folder

REPORT = "report"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _representatives(shifts: pd.DataFrame, direction: str, k: int) -> list[str]:
    """The ``k`` tiles the model finds least and most likely at α closest to 0."""
    d = shifts[shifts["direction"] == direction]
    a0 = d["alpha"].iloc[(d["alpha"] - 0).abs().argmin()]
    at0 = d[d["alpha"] == a0].sort_values("prediction", kind="stable")["tile_id"].tolist()
    return list(dict.fromkeys(at0[:k] + at0[-k:]))


def _images(cfg: Config, preds: pd.DataFrame, max_images: int) -> list[bytes]:
    """Radiology: each image's tile with the classifier's probability (highest first)."""
    store = TileStore(cfg.workdir / "tiles")
    ranked = preds.sort_values("prob", ascending=False, kind="stable")
    pick = pd.concat([ranked.head(max_images // 2), ranked.tail(max_images - max_images // 2)])
    out = []
    for r in pick.drop_duplicates("tile_id").itertuples():
        tile = as_rgb(store.read_tiles(str(r.slide_id), [int(r.index)])[0])
        out.append(
            slide_overview(tile, np.zeros((0, 4)), np.zeros(0), f"{r.slide_id} (P {r.prob:.2f})")
        )
    return out


def _slides(cfg: Config, preds: pd.DataFrame, max_slides: int) -> list[bytes]:
    if cfg.modality == "radiology":
        return _images(cfg, preds, max_slides)
    store = TileStore(cfg.workdir / "tiles")
    slides = store.read_slides()
    slides = slides[slides["status"] == "ok"].head(max_slides)
    manifest = store.read_manifest().merge(preds[["tile_id", "prob"]], on="tile_id")
    out = []
    for s in slides.itertuples():
        try:
            slide = open_slide(s.path)
        except SlideError:
            continue
        thumb = np.asarray(slide.get_thumbnail((256, 256)).convert("RGB"))
        f = thumb.shape[1] / slide.dimensions[0]
        t = manifest[manifest["slide_id"] == s.slide_id]
        side = cfg.tiling.size * float(t["mpp"].iloc[0]) / float(s.mpp) * f if len(t) else 0
        boxes = (
            np.stack([t["x"] * f, t["y"] * f, np.full(len(t), side), np.full(len(t), side)], axis=1)
            if len(t)
            else np.zeros((0, 4))
        )
        title = f"{s.slide_id} ({len(t)} tiles, mean P {t['prob'].mean():.2f})"
        out.append(slide_overview(thumb, boxes, t["prob"].to_numpy(), title))
    return out


def _headline(d: Any, verdict: pd.Series | None, top: pd.DataFrame) -> str:
    """What the report says first about a direction: its verdict and, unless it is not
    supported, the features specific to it."""
    fit = f"held-out AUC {d.auc:.3f}; " if pd.notna(d.auc) else ""
    if verdict is None:
        return f"{d.kind} direction; {fit}no verdict."
    v, reasons = verdict["verdict"], verdict["reasons"]
    head = f"{d.kind} direction; {fit}verdict: {v.replace('_', ' ')}."
    if v == "not_supported":
        return f"{head} No feature is reported as a finding. Why: {reasons}."
    named = top[top["specific"].astype(bool)]
    feats = ", ".join(
        f"{r.feature} {r.effect:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}] (z {r.specific_z:+.1f})"
        for r in named.itertuples()
    )
    lead = "Specific features" if v == "supported" else "Tentative specific features"
    caveat = f" Caveats: {reasons}." if reasons else ""
    return f"{head} {lead}: {feats or 'none'}.{caveat}"


def _strips(ctx: dict[str, Any], d: Any, alphas: list[float], sec: DirectionSection) -> None:
    """Each representative tile: real tile, heatmaps, then its reconstruction (α = 0, with
    its fidelity) moved along the direction; a GIF beside the report."""
    shifts, fid = ctx["shifts"], ctx["fidelity"]
    vec = np.asarray(d.vector, np.float32)
    for tile_id in _representatives(shifts, d.name, ctx["k"]):
        lat = ctx["latents"][ctx["row_of"][tile_id]][None]
        w = torch.from_numpy(
            shift_latents(lat, vec, np.asarray(alphas, np.float32), float(d.sigma))[0]
        )
        with torch.no_grad():
            img = ctx["gen"].synthesis(w if w.shape[1] > 1 else w[:, 0])
        frames = (img * 255).round().byte().permute(0, 2, 3, 1).numpy()
        p = shifts[(shifts["direction"] == d.name) & (shifts["tile_id"] == tile_id)]
        p = p.set_index("alpha")["prediction"]
        labels = [
            ("recon " if al == 0 else "") + f"a{al:+.1f} p{p.get(al, np.nan):.2f}" for al in alphas
        ]
        r = ctx["inv"].iloc[ctx["row_of"][tile_id]]
        real = ctx["store"].read_tiles(str(r["slide_id"]), np.array([int(r["index"])]))[0]
        lead = [(real, f"real p{ctx['prob_of'].get(tile_id, np.nan):.2f}")]
        for m in ctx["methods"]:
            hm = ctx["heat"].read(m, str(r["slide_id"]), np.array([int(r["index"])]))[0]
            lead.append((overlay(real, hm, signed=m == "occlusion"), m))
        f = fid.set_index("tile_id").loc[tile_id] if tile_id in set(fid["tile_id"]) else None
        quality = (
            ""
            if f is None
            else (
                f"; reconstruction SSIM {f['ssim']:.2f} (others ≤ {f['ssim_reference']:.2f}), "
                f"PSNR {f['psnr']:.1f} dB, |Δp| {f['prob_change']:.2f}"
            )
        )
        sec.strips.append(
            (
                f"{tile_id}: real tile, heatmap, then its reconstruction moved along "
                f"{d.name}{quality}",
                strip(frames, labels, lead=lead),
            )
        )
        save_gif(ctx["out"] / "gifs" / f"{_slug(d.name)}_{_slug(tile_id)}.gif", frames, scale=3)


def _sections(
    ctx: dict[str, Any], dirs: pd.DataFrame, effects: pd.DataFrame, verdicts: pd.DataFrame
) -> list[DirectionSection]:
    shifts = ctx["shifts"]
    by_dir = verdicts.set_index("direction")
    cols = [
        "feature",
        "effect",
        "ci_low",
        "ci_high",
        "specific_z",
        "specific_q",
        "specific",
        "effect_per_logit",
    ]
    sections = []
    for d in dirs.itertuples():
        sec_effects = effects[effects["direction"] == d.name]
        top = sec_effects.nsmallest(5, "rank")
        verdict = by_dir.loc[d.name] if d.name in by_dir.index else None
        sec = DirectionSection(
            d.name,
            _headline(d, verdict, top),
            effects_png=effects_chart(effects, d.name) if len(sec_effects) else None,
            effects_table=top[[c for c in cols if c in top.columns]],
        )
        alphas = sorted(shifts.loc[shifts["direction"] == d.name, "alpha"].unique())
        if alphas:
            _strips(ctx, d, alphas, sec)
        sections.append(sec)
    return sections


def _bias_tables(bias: pd.DataFrame, effects: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    cos = bias[bias["section"] == "cosine"][[c for c in COSINE_COLUMNS if c != "section"]]
    cond = bias[bias["section"] == "conditional"][CONDITIONAL_COLUMNS[1:]]
    grp = bias[bias["section"] == "group_effect"]
    top = effects[(effects["direction"] == "classifier")].nsmallest(6, "rank")["feature"]
    grp_cols = ["column", "group", "feature", "effect", "n_slides", "estimable", "p_heterogeneity"]
    if "feature" in grp:
        grp = grp[(grp["direction"] == "classifier") & grp["feature"].isin(top)]
    return [
        (
            "Cosine between directions (null: metadata directions refitted on slide-level "
            "shuffles)",
            cos,
        ),
        ("Prediction change left after projecting out metadata directions (equal steps)", cond),
        (
            "Classifier-direction effects within metadata groups",
            grp[grp_cols] if len(grp) else pd.DataFrame(columns=grp_cols),
        ),
    ]


def _context(cfg: Config, a_dir: WorkPath, tiles_per_direction: int) -> dict[str, Any]:
    """What drawing the strips needs: shifts, fidelity, the generator, latents, tiles, heatmaps."""
    preds_path = cfg.workdir / "predictions.parquet"
    preds = read_parquet(preds_path) if preds_path.is_file() else None
    inv, latents = load_inverted(cfg)
    heat_dir = cfg.workdir / "heatmaps"
    heat = HeatmapStore(heat_dir) if heat_dir.is_dir() else None
    shifts = read_parquet(a_dir / "shifts.parquet")
    if "replicate" in shifts:
        shifts = shifts[shifts["replicate"] == 0]
    return {
        "shifts": shifts,
        "fidelity": read_parquet(a_dir / "fidelity.parquet"),
        "gen": load_generator(generator_folder(cfg)),
        "inv": inv,
        "latents": latents,
        "row_of": {t: i for i, t in enumerate(inv["tile_id"])},
        "store": TileStore(cfg.workdir / "tiles"),
        "heat": heat,
        "methods": heat.methods() if heat is not None else [],
        "preds": preds,
        "prob_of": preds.set_index("tile_id")["prob"] if preds is not None else pd.Series(),
        "k": tiles_per_direction,
        "out": cfg.workdir / REPORT,
    }


def run_report(cfg: Config, tiles_per_direction: int = 2, max_slides: int = 24) -> Path:
    """Write the report; returns the path of ``index.html``."""
    a_dir = cfg.workdir / OUT
    needed = [
        f"{n}.parquet"
        for n in ("directions", "shifts", "feature_effects", "cohort_bias", "verdicts", "fidelity")
    ]
    missing = [n for n in needed if not (a_dir / n).is_file()]
    if missing:
        raise AnalysisInputError(f"{a_dir}: missing {missing}; run `stylepath analyze` first")
    dirs = read_parquet(a_dir / "directions.parquet")
    dirs = dirs[dirs["estimable"] & (dirs["replicate"] == 0) & (dirs["kind"] != "random")]
    effects = read_parquet(a_dir / "feature_effects.parquet")
    verdicts = read_parquet(a_dir / "verdicts.parquet")
    ctx = _context(cfg, a_dir, tiles_per_direction)
    (ctx["out"] / "gifs").mkdir(parents=True, exist_ok=True)
    shifts, fid = ctx["shifts"], ctx["fidelity"]
    shown = shifts[shifts["direction"].isin(dirs["name"])]
    overview = [
        ("workdir", str(cfg.workdir)),
        ("generator", str(generator_folder(cfg))),
        ("generator kimg", ctx["gen"].meta.get("kimg")),
        ("tiles selected", len(fid)),
        ("tiles faithful", int(fid["faithful"].sum())),
        ("tiles shifted", shown["tile_id"].nunique()),
        ("frames", len(shown)),
        ("classifier", cfg.classifier.model or "built-in"),
    ]
    report = Report(
        title="stylepath report",
        provenance=read_provenance(a_dir / "shifts.parquet") or {},
        overview=overview,
        verdicts_table=verdicts,
        directions_table=dirs[["name", "kind", "auc", "accuracy", "stability", "sigma"]],
        prediction_png=prediction_vs_alpha(shown, "explained class") if len(shown) else None,
        sections=_sections(ctx, dirs, effects, verdicts),
        bias_tables=_bias_tables(read_parquet(a_dir / "cohort_bias.parquet"), effects),
        slides=_slides(cfg, ctx["preds"], max_slides) if ctx["preds"] is not None else [],
        notes=_fidelity_notes(fid),
    )
    report.probes_png, report.probe_tables = _probe_section(a_dir, cfg.modality)
    path = ctx["out"] / "index.html"
    atomic_write_text(path, render(report))
    return path


def _probe_section(
    a_dir: WorkPath, modality: str
) -> tuple[bytes | None, list[tuple[str, pd.DataFrame]]]:
    """The probes' dose-response figure, the stain normalisation and per-group tables and
    the agreement of the GAN's findings with them (nothing when no probe ran)."""
    path = a_dir / "perturbations.parquet"
    probes = read_parquet(path) if path.is_file() else pd.DataFrame()
    if probes.empty:
        return None, []
    png = dose_response(probes, {f: v[0] for f, v in PERTURBATIONS.items()})
    cols = [c for c in PROBE_COLUMNS if c not in ("family", "target", "n_slides")]
    norm = probes[probes["family"] == "stain_normalise"][cols]
    stain = probes[probes["family"].isin(["hematoxylin", "eosin"]) & (probes["group"] != "all")]
    tables = [
        ("Re-stained with another group's stain vectors (the stain-shortcut test)", norm),
        ("Stain scaling within metadata groups", stain[cols]),
    ]
    agree_path = a_dir / "agreement.parquet"
    if agree_path.is_file():
        tables.append(
            ("Do the probes agree with the GAN's specific features?", read_parquet(agree_path))
        )
    return png, [(c, t) for c, t in tables if len(t)]


def _fidelity_notes(fid: pd.DataFrame) -> list[str]:
    """One line on the fidelity gate: how many tiles passed and why the others did not."""
    why = fid.loc[~fid["faithful"], "fidelity_reason"].str.split("; ").explode().value_counts()
    failed = ", ".join(f"{k}: {v}" for k, v in why.items() if k)
    return [
        f"Fidelity gate: {int(fid['faithful'].sum())} of {len(fid)} selected tiles have a "
        f"faithful reconstruction and are explained" + (f" (failed: {failed})." if failed else ".")
    ]
