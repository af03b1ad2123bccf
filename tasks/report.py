"""``stylepath report``: the HTML report of an analysed workdir (``workdir/report/index.html``,
self-contained) plus GIF strips per tile (``workdir/report/gifs/``). Runs in the driver: it
only re-synthesises a few strips and reads slide thumbnails."""

from __future__ import annotations

import re
from pathlib import Path

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
from pipeline.io.tile_store import TileStore
from pipeline.reports.html import DirectionSection, Report, render, strip
from pipeline.reports.plots import effects_chart, prediction_vs_alpha, slide_overview
from pipeline.slides.open import SlideError, open_slide
from tasks.analyze import OUT, AnalysisInputError, load_inverted
from tasks.invert import generator_folder

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
        out.append(slide_overview(tile, np.zeros((0, 4)), np.zeros(0),
                                  f"{r.slide_id} (P {r.prob:.2f})"))  # fmt: skip
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
        boxes = np.stack([t["x"] * f, t["y"] * f, np.full(len(t), side), np.full(len(t), side)],
                         axis=1) if len(t) else np.zeros((0, 4))  # fmt: skip
        title = f"{s.slide_id} ({len(t)} tiles, mean P {t['prob'].mean():.2f})"
        out.append(slide_overview(thumb, boxes, t["prob"].to_numpy(), title))
    return out


def run_report(cfg: Config, tiles_per_direction: int = 2, max_slides: int = 24) -> Path:
    """Write the report; returns the path of ``index.html``."""
    a_dir = cfg.workdir / OUT
    needed = ["directions.parquet", "shifts.parquet", "feature_effects.parquet",
              "cohort_bias.parquet"]  # fmt: skip
    missing = [n for n in needed if not (a_dir / n).is_file()]
    if missing:
        raise AnalysisInputError(f"{a_dir}: missing {missing}; run `stylepath analyze` first")
    dirs = read_parquet(a_dir / "directions.parquet")
    shifts = read_parquet(a_dir / "shifts.parquet")
    effects = read_parquet(a_dir / "feature_effects.parquet")
    bias = read_parquet(a_dir / "cohort_bias.parquet")
    prov = read_provenance(a_dir / "shifts.parquet") or {}
    preds_path = cfg.workdir / "predictions.parquet"
    preds = read_parquet(preds_path) if preds_path.is_file() else None
    prob_of = preds.set_index("tile_id")["prob"] if preds is not None else pd.Series(dtype=float)
    gen = load_generator(generator_folder(cfg))
    inv, latents = load_inverted(cfg)
    row_of = {t: i for i, t in enumerate(inv["tile_id"])}
    store = TileStore(cfg.workdir / "tiles")
    heat_dir = cfg.workdir / "heatmaps"
    heat = HeatmapStore(heat_dir) if heat_dir.is_dir() else None
    methods = heat.methods() if heat is not None else []
    out = cfg.workdir / REPORT
    (out / "gifs").mkdir(parents=True, exist_ok=True)

    sections = []
    for d in dirs[dirs["estimable"]].itertuples():
        vec = np.asarray(d.vector, np.float32)
        alphas = sorted(shifts.loc[shifts["direction"] == d.name, "alpha"].unique())
        sec_effects = effects[effects["direction"] == d.name]
        top = sec_effects.nsmallest(5, "rank")
        summary = (f"{d.kind} direction; held-out AUC {d.auc:.3f}. " if pd.notna(d.auc)
                   else f"{d.kind} direction. ") + "Top features: " + ", ".join(
            f"{r.feature} {r.effect:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}]"
            for r in top.itertuples())  # fmt: skip
        sec = DirectionSection(d.name, summary, effects_png=effects_chart(effects, d.name),
                               effects_table=top[["feature", "effect", "ci_low", "ci_high",
                                                  "p_value", "effect_per_logit"]])  # fmt: skip
        for tile_id in _representatives(shifts, d.name, tiles_per_direction):
            lat = latents[row_of[tile_id]][None]
            w = torch.from_numpy(shift_latents(lat, vec, np.asarray(alphas, np.float32),
                                               float(d.sigma))[0])  # fmt: skip
            with torch.no_grad():
                img = gen.synthesis(w if w.shape[1] > 1 else w[:, 0])
            frames = (img * 255).round().byte().permute(0, 2, 3, 1).numpy()
            p = shifts[(shifts["direction"] == d.name) & (shifts["tile_id"] == tile_id)]
            p = p.set_index("alpha")["prediction"]
            labels = [f"a{al:+.1f} p{p.get(al, np.nan):.2f}" for al in alphas]
            r = inv.iloc[row_of[tile_id]]
            real = store.read_tiles(str(r["slide_id"]), np.array([int(r["index"])]))[0]
            p_real = prob_of.get(tile_id, np.nan)
            lead = [(real, f"real p{p_real:.2f}")]
            for m in methods:
                hm = heat.read(m, str(r["slide_id"]), np.array([int(r["index"])]))[0]
                lead.append((overlay(real, hm, signed=m == "occlusion"), m))
            sec.strips.append((f"{tile_id}: real tile, heatmap, then the reconstruction moved "
                               f"along {d.name}", strip(frames, labels, lead=lead)))  # fmt: skip
            save_gif(out / "gifs" / f"{_slug(d.name)}_{_slug(tile_id)}.gif", frames, scale=3)
        sections.append(sec)

    cos = bias[bias["section"] == "cosine"][["direction", "other", "cosine", "null_q95",
                                              "null_q99", "above_null"]]  # fmt: skip
    cond_cols = ["direction", "other", "logit_slope", "logit_slope_conditional", "survived"]
    cond = bias[bias["section"] == "conditional"][cond_cols]
    grp = bias[bias["section"] == "group_effect"]
    top_feats = effects[(effects["direction"] == "classifier")].nsmallest(6, "rank")["feature"]
    grp = grp[(grp["direction"] == "classifier") & grp["feature"].isin(top_feats)][
        ["column", "group", "feature", "effect", "n_slides", "estimable", "p_heterogeneity"]
    ]
    n_tiles = shifts["tile_id"].nunique()
    report = Report(
        title="stylepath report",
        provenance=prov,
        overview=[("workdir", str(cfg.workdir)), ("generator", str(generator_folder(cfg))),
                  ("generator kimg", gen.meta.get("kimg")), ("tiles shifted", n_tiles),
                  ("frames", len(shifts)), ("classifier", cfg.classifier.model or "built-in")],
        directions_table=dirs[["name", "kind", "estimable", "auc", "accuracy", "sigma",
                               "reason"]],
        prediction_png=prediction_vs_alpha(shifts, "explained class"),
        sections=sections,
        bias_tables=[("Cosine between directions (null: |cos| of random directions)", cos),
                     ("Prediction change left after projecting out metadata directions", cond),
                     ("Classifier-direction effects within metadata groups", grp)],
        slides=_slides(cfg, preds, max_slides) if preds is not None else [],
    )  # fmt: skip
    path = out / "index.html"
    text = render(report)
    atomic_write_text(path, text)
    return path
