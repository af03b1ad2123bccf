"""``stylepath predict``: every tile scored by a Ray actor pool, with baseline heatmaps.

Each actor loads the classifier once and scores shard-sized runs of one slide's tiles in
batches. The driver writes ``workdir/predictions.parquet`` (one row per tile),
``workdir/heatmaps/`` (``HeatmapStore``: float16 maps per method and slide) and, last,
``workdir/predictions.json`` (the fingerprint of model files + tile manifest + settings; a
re-run with the same fingerprint does nothing).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.classifier.contract import (
    ClassifierError,
    ClassifierSpec,
    load_classifier,
    resolve_spec,
    tiles_to_tensor,
)
from pipeline.classifier.heatmaps import find_layer, gradcam, occlusion, overlay
from pipeline.config import Config, PredictConfig
from pipeline.io.files import atomic_write_json, workdir_lock
from pipeline.io.heatmap_store import HeatmapStore
from pipeline.io.images import as_rgb, image_grid, save_png
from pipeline.io.parquet import read_parquet, write_parquet
from pipeline.io.paths import WorkPath
from pipeline.io.tile_store import TileStore
from pipeline.provenance import content_key
from tasks.pool import exit_once, fault_marker
from tasks.runtime import ensure_ray
from tasks.stage import StageActor, actor_class, progress_bar, run_stage_pool, tiled

PREDICTIONS = "predictions.parquet"
STAMP = "predictions.json"
PREDICT_VERSION = 2  # bump when scoring changes
HEATMAPS = "heatmaps"


class PredictInputError(ValueError):
    """No tiles to score, or heatmaps the model cannot give."""


@dataclass
class PredictSummary:
    n_tiles: int = 0
    n_reused: int = 0  # tiles of unchanged slides, kept from the last run
    skipped: bool = False
    seconds: float = 0.0
    tiles_per_s: float = 0.0
    methods: list[str] = field(default_factory=list)
    explained_class: str = ""
    model: str = ""


def heatmap_methods(requested: str, is_script: bool) -> list[str]:
    """Which maps to compute; GradCAM needs an ``nn.Module`` (TorchScript is a black box)."""
    if requested == "none":
        return []
    if requested == "auto":
        return ["occlusion"] if is_script else ["gradcam"]
    methods = ["gradcam", "occlusion"] if requested == "both" else [requested]
    if "gradcam" in methods and is_script:
        raise PredictInputError(
            "classifier.predict.heatmaps: GradCAM needs the model's layers, but a TorchScript "
            "model is a black box here; use occlusion, or give an entry_point + weights"
        )
    return methods


class Scorer(StageActor):
    """Logits, explained-class probability and heatmaps for runs of one slide's tiles."""

    def __init__(
        self,
        spec: ClassifierSpec,
        tiles_root: WorkPath,
        methods: list[str],
        pcfg: PredictConfig,
        fault: str | None = None,
    ) -> None:
        super().__init__(pcfg.num_cpus, pcfg.num_gpus)
        self.clf = load_classifier(spec, self.device)
        self.store = TileStore(tiles_root)
        self.methods = methods
        self.pcfg = pcfg
        self.layer = (
            find_layer(self.clf.model, spec.gradcam_layer) if "gradcam" in methods else None
        )
        self.fault = fault

    def score(self, slide_id: str, start: int, stop: int) -> dict[str, Any]:
        exit_once(self.fault)  # the test hook: die mid-job, once
        clf, p = self.clf, self.pcfg
        tiles = self.store.read_tiles(slide_id, slice(start, stop))
        logits, probs = [], []
        maps: dict[str, list[np.ndarray]] = {m: [] for m in self.methods}
        for a in range(0, len(tiles), p.batch_size):
            x = clf.prepare(tiles_to_tensor(tiles[a : a + p.batch_size]).to(self.device))
            with torch.no_grad():
                z = clf.model(x)
                logits.append(z.reshape(len(x), -1).float().cpu().numpy())
                probs.append(clf.prob(z).float().cpu().numpy())
            if "gradcam" in maps:
                cam = gradcam(lambda v: clf.score(clf.model(v)), self.layer, x, p.heatmap_grid)
                maps["gradcam"].append(cam.numpy().astype(np.float16))
            if "occlusion" in maps:
                occ = occlusion(
                    lambda v: clf.prob(clf.model(v)),
                    x,
                    p.occlusion_patch,
                    p.occlusion_stride,
                    p.heatmap_grid,
                )
                maps["occlusion"].append(occ.numpy().astype(np.float16))
        return {
            "slide_id": slide_id,
            "start": start,
            "stop": stop,
            "logits": np.concatenate(logits),
            "prob": np.concatenate(probs),
            "maps": {m: np.concatenate(v) for m, v in maps.items()},
        }


def fingerprint(spec: ClassifierSpec, methods: list[str], pcfg: PredictConfig) -> str:
    """Model files + settings and heatmap settings (the tiles are tracked per slide)."""
    settings = {
        "methods": methods,
        "grid": pcfg.heatmap_grid,
        "patch": pcfg.occlusion_patch,
        "stride": pcfg.occlusion_stride,
    }
    return content_key(PREDICT_VERSION, spec.fingerprint(), settings, size=16)


def _stamp(workdir: Path) -> dict[str, Any]:
    try:
        return json.loads((workdir / STAMP).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def reusable_slides(workdir: Path, fp: str, slides: dict[str, str]) -> set[str]:
    """Slides whose predictions and heatmaps from the last run still hold: same model and
    settings, same tiles (slide fingerprint)."""
    stamp = _stamp(workdir)
    if stamp.get("fingerprint") != fp or not (workdir / PREDICTIONS).is_file():
        return set()
    if (HeatmapStore(workdir / HEATMAPS).meta() or {}).get("fingerprint") != fp:
        return set()
    old = stamp.get("slides", {})
    return {s for s, f in slides.items() if old.get(s) == f}


def is_done(workdir: Path, fp: str, slides: dict[str, str]) -> bool:
    return _stamp(workdir).get("slides") == slides and reusable_slides(workdir, fp, slides) == set(
        slides
    )


def prepare(cfg: Config) -> tuple[pd.DataFrame, ClassifierSpec, list[str], str, Any]:
    """Everything checked before any work: tiles, the model (loaded and probed), heatmaps."""
    manifest, tile_size, channels = tiled(cfg.workdir, PredictInputError, "score")
    spec = resolve_spec(cfg.classifier, cfg.workdir, tile_size, channels)
    clf = load_classifier(spec)
    methods = heatmap_methods(cfg.classifier.predict.heatmaps, clf.is_script)
    if "gradcam" in methods:
        try:
            find_layer(clf.model, spec.gradcam_layer)
        except ValueError as exc:
            raise ClassifierError(f"{spec.source}: {exc}") from None
    fp = fingerprint(spec, methods, cfg.classifier.predict)
    return manifest, spec, methods, fp, clf


def _overview(
    store: TileStore,
    heat: HeatmapStore,
    preds: pd.DataFrame,
    methods: list[str],
    path: Path,
    n: int = 8,
) -> None:
    """A PNG: the ``n`` highest- and ``n`` lowest-scoring tiles, then each method's overlay."""
    ranked = preds.sort_values("prob", kind="stable")
    rows = pd.concat([ranked.tail(n).iloc[::-1], ranked.head(n)])
    cells = []
    for r in rows.itertuples():
        tile = as_rgb(store.read_tiles(r.slide_id, [r.index])[0])
        cells.append(tile)
        for m in methods:
            hm = heat.read(m, r.slide_id, [r.index])[0]
            cells.append(overlay(tile, hm, signed=m == "occlusion"))
    save_png(path, image_grid(np.stack(cells), 1 + len(methods)))


@dataclass(frozen=True)
class ScoreJob:
    """Tiles ``start:stop`` of one slide."""

    slide_id: str
    start: int
    stop: int


def score_jobs(todo: pd.Series, per_task: int) -> list[ScoreJob]:
    """Shard-sized runs of each slide's tiles (``todo``: slide → number of tiles)."""
    return [
        ScoreJob(str(sid), a, min(a + per_task, int(n)))
        for sid, n in todo.items()
        for a in range(0, int(n), per_task)
    ]


@dataclass
class Scores:
    """Each scored slide's logits, probabilities and maps, filled as parts arrive."""

    counts: pd.Series  # slide → number of tiles
    methods: list[str]
    grid: int
    n_cols: int = 0
    logits: dict[str, np.ndarray] = field(default_factory=dict)
    probs: dict[str, np.ndarray] = field(default_factory=dict)
    maps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.maps = {m: {} for m in self.methods}

    def add(self, r: dict[str, Any]) -> int:
        """One part's result; returns its number of tiles."""
        sid, a, b = r["slide_id"], r["start"], r["stop"]
        self.n_cols = r["logits"].shape[1]
        if sid not in self.probs:
            n = int(self.counts[sid])
            self.logits[sid] = np.zeros((n, self.n_cols), np.float32)
            self.probs[sid] = np.zeros(n, np.float32)
            for m in self.methods:
                self.maps[m][sid] = np.zeros((n, self.grid, self.grid), np.float16)
        self.logits[sid][a:b] = r["logits"]
        self.probs[sid][a:b] = r["prob"]
        for m in self.methods:
            self.maps[m][sid][a:b] = r["maps"][m]
        return b - a

    def table(self, manifest: pd.DataFrame) -> pd.DataFrame:
        """One row per scored tile: ids, ``logit`` (or ``logit_<k>``) and ``prob``."""
        new = manifest[manifest["slide_id"].astype(str).isin(self.probs)]
        preds = new[["tile_id", "slide_id", "index"]].reset_index(drop=True)
        if len(new):
            pairs = list(zip(new["slide_id"].astype(str), new["index"], strict=True))
            z = np.stack([self.logits[s][i] for s, i in pairs])
            if self.n_cols == 1:
                preds["logit"] = z[:, 0]
            else:
                for k in range(self.n_cols):
                    preds[f"logit_{k}"] = z[:, k]
            preds["prob"] = np.array([self.probs[s][i] for s, i in pairs], np.float32)
        return preds


def _score(
    cfg: Config, spec: ClassifierSpec, scores: Scores, todo: pd.Series, progress: bool | None
) -> None:
    """Score the ``todo`` slides on the stage's actor pool into ``scores``."""
    if not len(todo):
        return
    p = cfg.classifier.predict
    ensure_ray(cfg.ray)
    actor_cls = actor_class(Scorer, p)
    tiles_root = cfg.workdir / "tiles"  # a path object: a URL keeps its storage options
    fault = fault_marker()
    with progress_bar(int(todo.sum()), "tile", "predict", progress) as bar:
        run_stage_pool(
            p,
            lambda: actor_cls.remote(spec, tiles_root, scores.methods, p, fault),
            lambda actor, job: actor.score.remote(job.slide_id, job.start, job.stop),
            score_jobs(todo, p.tiles_per_task),
            lambda job, r: bar.update(scores.add(r)),
            stage="predict",
            setting="classifier.predict",
            describe=lambda job: f"{job.slide_id} tiles {job.start}-{job.stop}",
        )


def _write_heatmaps(workdir: Path, scores: Scores, meta: dict[str, Any]) -> HeatmapStore:
    """Every slide's maps (new ones, or the last run's for reused slides), committed at once."""
    old_heat = HeatmapStore(workdir / HEATMAPS)
    staging = HeatmapStore.staging(workdir / HEATMAPS)
    try:
        for m in scores.methods:
            for sid in scores.counts.index.astype(str):
                new = scores.maps[m][sid] if sid in scores.probs else old_heat.read(m, sid)
                staging.write(m, sid, new)
        return staging.commit(workdir / HEATMAPS, meta)
    except BaseException:
        staging.discard()
        raise


def _stamp_record(
    spec: ClassifierSpec, clf: Any, fp: str, summary: PredictSummary
) -> dict[str, Any]:
    """What ``predictions.json`` records beside the slides' fingerprints."""
    return {
        "fingerprint": fp,
        "model": spec.source,
        "kind": spec.kind,
        "class_names": list(clf.class_names),
        "explained_class": clf.explained_class,
        "n_outputs": clf.n_outputs,
        "input_size": spec.input_size,
        "mean": spec.mean,
        "std": spec.std,
        "methods": summary.methods,
        "n_tiles": summary.n_tiles,
        "n_scored": summary.n_tiles - summary.n_reused,
        "seconds": round(summary.seconds, 2),
        "tiles_per_s": round(summary.tiles_per_s, 1),
    }


def run_predict(cfg: Config, progress: bool | None = None) -> PredictSummary:
    """Score the tiles of new or changed slides (nothing when model, settings and slides are
    unchanged); see the module docstring."""
    t0 = time.perf_counter()
    manifest, spec, methods, fp, clf = prepare(cfg)
    summary = PredictSummary(len(manifest), methods=methods, model=spec.source)
    summary.explained_class = clf.explained_class
    workdir, p = cfg.workdir, cfg.classifier.predict
    slides = TileStore(workdir / "tiles").slide_fingerprints()
    if is_done(workdir, fp, slides):
        summary.skipped, summary.n_reused = True, len(manifest)
        summary.seconds = time.perf_counter() - t0
        return summary
    with workdir_lock(workdir):
        reuse = reusable_slides(workdir, fp, slides)
        old_preds = read_parquet(workdir / PREDICTIONS) if reuse else None
        (workdir / STAMP).unlink(missing_ok=True)  # not done until the new stamp is written
        HeatmapStore.clear_stale(workdir / HEATMAPS)
        counts = manifest.groupby("slide_id", sort=False)["index"].max() + 1
        todo = counts[~counts.index.astype(str).isin(reuse)]
        summary.n_reused = int(len(manifest) - todo.sum())
        scores = Scores(counts, methods, p.heatmap_grid)
        t_work = time.perf_counter()
        _score(cfg, spec, scores, todo, progress)
        work_seconds = time.perf_counter() - t_work
        preds = scores.table(manifest)
        if old_preds is not None:  # the reused slides' rows, then manifest order
            kept = old_preds[old_preds["slide_id"].astype(str).isin(reuse)]
            preds = pd.concat([kept, preds] if len(preds) else [kept], ignore_index=True)
            preds = manifest[["tile_id"]].merge(preds, on="tile_id", how="inner")
        meta = {
            "methods": methods,
            "grid": p.heatmap_grid,
            "fingerprint": fp,
            "explained_class": clf.explained_class,
            "model": spec.source,
            "occlusion_patch": p.occlusion_patch,
            "occlusion_stride": p.occlusion_stride,
            "input_size": spec.input_size,
        }
        heat = _write_heatmaps(workdir, scores, meta)
        write_parquet(preds, workdir / PREDICTIONS)
        if methods:
            store = TileStore(workdir / "tiles")
            _overview(store, heat, preds, methods, workdir / HEATMAPS / "top.png")
        summary.seconds = time.perf_counter() - t0
        summary.tiles_per_s = (len(manifest) - summary.n_reused) / max(work_seconds, 1e-9)
        record = _stamp_record(spec, clf, fp, summary)
        atomic_write_json(workdir / STAMP, {**record, "slides": slides})
    return summary
