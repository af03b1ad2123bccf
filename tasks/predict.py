"""``stylepath predict``: every tile scored by a Ray actor pool, with baseline heatmaps.

Each actor loads the classifier once and scores shard-sized runs of one slide's tiles in
batches. The driver writes ``workdir/predictions.parquet`` (one row per tile),
``workdir/heatmaps/`` (``HeatmapStore``: float16 maps per method and slide) and, last,
``workdir/predictions.json`` (the fingerprint of model files + tile manifest + settings; a
re-run with the same fingerprint does nothing).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
import torch
from tqdm import tqdm

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
from tasks.pool import ResilientPool, exit_once, fault_marker
from tasks.runtime import ensure_ray

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


class Scorer:
    """Logits, explained-class probability and heatmaps for runs of one slide's tiles."""

    def __init__(self, spec: ClassifierSpec, tiles_root: WorkPath, methods: list[str],
                 pcfg: PredictConfig, fault: str | None = None) -> None:  # fmt: skip
        torch.set_num_threads(max(1, int(pcfg.num_cpus)))
        use_cuda = pcfg.num_gpus > 0 and torch.cuda.is_available()
        self.device = torch.device("cuda" if use_cuda else "cpu")
        self.clf = load_classifier(spec, self.device)
        self.store = TileStore(tiles_root)
        self.methods = methods
        self.pcfg = pcfg
        self.layer = (
            find_layer(self.clf.model, spec.gradcam_layer) if "gradcam" in methods else None
        )
        self.fault = fault

    def ready(self) -> bool:
        """Answers once the model is loaded (the pool gives work only to ready actors)."""
        return True

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
                occ = occlusion(lambda v: clf.prob(clf.model(v)), x, p.occlusion_patch,
                                p.occlusion_stride, p.heatmap_grid)  # fmt: skip
                maps["occlusion"].append(occ.numpy().astype(np.float16))
        return {
            "slide_id": slide_id, "start": start, "stop": stop,
            "logits": np.concatenate(logits), "prob": np.concatenate(probs),
            "maps": {m: np.concatenate(v) for m, v in maps.items()},
        }  # fmt: skip


def fingerprint(spec: ClassifierSpec, methods: list[str], pcfg: PredictConfig) -> str:
    """Model files + settings and heatmap settings (the tiles are tracked per slide)."""
    settings = {"methods": methods, "grid": pcfg.heatmap_grid, "patch": pcfg.occlusion_patch,
                "stride": pcfg.occlusion_stride}  # fmt: skip
    blob = json.dumps([PREDICT_VERSION, spec.fingerprint(), settings], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
    return (_stamp(workdir).get("slides") == slides
            and reusable_slides(workdir, fp, slides) == set(slides))  # fmt: skip


def prepare(cfg: Config) -> tuple[pd.DataFrame, ClassifierSpec, list[str], str, Any]:
    """Everything checked before any work: tiles, the model (loaded and probed), heatmaps."""
    store = TileStore(cfg.workdir / "tiles")
    if not store.tiles_manifest.is_file():
        raise PredictInputError(f"{store.tiles_manifest}: no tiles; run `stylepath tile` first")
    manifest = store.read_manifest()
    if manifest.empty:
        raise PredictInputError(f"{store.tiles_manifest}: no tiles to score")
    tile_size, channels = store.tile_shape(manifest)
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


def _overview(store: TileStore, heat: HeatmapStore, preds: pd.DataFrame, methods: list[str],
              path: Path, n: int = 8) -> None:  # fmt: skip
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


def run_predict(cfg: Config, progress: bool | None = None) -> PredictSummary:
    """Score the tiles of new or changed slides (nothing when model, settings and slides are
    unchanged); see the module docstring."""
    t0 = time.perf_counter()
    manifest, spec, methods, fp, clf = prepare(cfg)
    summary = PredictSummary(n_tiles=len(manifest), methods=methods, model=spec.source,
                             explained_class=clf.explained_class)  # fmt: skip
    workdir = cfg.workdir
    slides = TileStore(workdir / "tiles").slide_fingerprints()
    if is_done(workdir, fp, slides):
        summary.skipped = True
        summary.n_reused = len(manifest)
        summary.seconds = time.perf_counter() - t0
        return summary
    p = cfg.classifier.predict
    if progress is None:
        progress = sys.stderr.isatty()
    with workdir_lock(workdir):
        reuse = reusable_slides(workdir, fp, slides)
        old_preds = read_parquet(workdir / PREDICTIONS) if reuse else None
        (workdir / STAMP).unlink(missing_ok=True)  # not done until the new stamp is written
        HeatmapStore.clear_stale(workdir / HEATMAPS)
        counts = manifest.groupby("slide_id", sort=False)["index"].max() + 1
        todo = counts[~counts.index.astype(str).isin(reuse)]
        summary.n_reused = int(len(manifest) - todo.sum())
        t_work = time.perf_counter()
        n_cols = 0
        logits: dict[str, np.ndarray] = {}
        probs: dict[str, np.ndarray] = {}
        maps: dict[str, dict[str, np.ndarray]] = {m: {} for m in methods}
        if len(todo):
            ensure_ray(cfg.ray)
            actor_cls = ray.remote(Scorer).options(num_cpus=p.num_cpus, num_gpus=p.num_gpus)
            tiles_root = workdir / "tiles"  # a path object: a URL keeps its storage options
            jobs = []
            for sid, n in todo.items():
                jobs += [(str(sid), a, min(a + p.tiles_per_task, int(n)))
                         for a in range(0, int(n), p.tiles_per_task)]  # fmt: skip
            bar = tqdm(total=int(todo.sum()), unit="tile", desc="predict", disable=not progress,
                       file=sys.stderr)  # fmt: skip

            def on_result(job: tuple[str, int, int], r: dict[str, Any]) -> None:
                nonlocal n_cols
                sid, a, b = r["slide_id"], r["start"], r["stop"]
                n_cols = r["logits"].shape[1]
                if sid not in probs:
                    logits[sid] = np.zeros((int(counts[sid]), n_cols), np.float32)
                    probs[sid] = np.zeros(int(counts[sid]), np.float32)
                    for m in methods:
                        maps[m][sid] = np.zeros((int(counts[sid]), p.heatmap_grid,
                                                 p.heatmap_grid), np.float16)  # fmt: skip
                logits[sid][a:b] = r["logits"]
                probs[sid][a:b] = r["prob"]
                for m in methods:
                    maps[m][sid][a:b] = r["maps"][m]
                bar.update(b - a)

            fault = fault_marker()
            # Ray's own restarts and retries are off: ResilientPool replaces dead actors on
            # live nodes itself (a restart pinned to a lost node would wait forever).
            pool: ResilientPool[tuple[str, int, int]] = ResilientPool(
                make_actor=lambda: actor_cls.remote(spec, tiles_root, methods, p, fault),
                call=lambda actor, job: actor.score.remote(*job),
                concurrency=p.concurrency, timeout_s=p.task_timeout_s,
                max_replacements=p.max_restarts, max_job_failures=p.max_task_retries + 1,
            )  # fmt: skip
            try:
                pool.run_all(jobs, on_result, stage="predict",
                             describe=lambda job: f"{job[0]} tiles {job[1]}-{job[2]}",
                             timeout_setting="classifier.predict.task_timeout_s")  # fmt: skip
            finally:
                bar.close()
        work_seconds = time.perf_counter() - t_work

        new = manifest[manifest["slide_id"].astype(str).isin(probs)]
        sids = new["slide_id"].astype(str).to_numpy()
        idx = new["index"].to_numpy()
        preds = new[["tile_id", "slide_id", "index"]].reset_index(drop=True)
        if len(new):
            z = np.stack([logits[s][i] for s, i in zip(sids, idx, strict=True)])
            if n_cols == 1:
                preds["logit"] = z[:, 0]
            else:
                for k in range(n_cols):
                    preds[f"logit_{k}"] = z[:, k]
            preds["prob"] = np.array([probs[s][i] for s, i in zip(sids, idx, strict=True)],
                                     np.float32)  # fmt: skip
        if old_preds is not None:  # the reused slides' rows, then manifest order
            kept = old_preds[old_preds["slide_id"].astype(str).isin(reuse)]
            preds = pd.concat([kept, preds] if len(new) else [kept], ignore_index=True)
            preds = manifest[["tile_id"]].merge(preds, on="tile_id", how="inner")
        old_heat = HeatmapStore(workdir / HEATMAPS)
        staging = HeatmapStore.staging(workdir / HEATMAPS)
        try:
            for m in methods:
                for sid in counts.index.astype(str):
                    staging.write(m, sid, maps[m][sid] if sid in probs else old_heat.read(m, sid))
            meta = {"methods": methods, "grid": p.heatmap_grid, "fingerprint": fp,
                    "explained_class": clf.explained_class, "model": spec.source,
                    "occlusion_patch": p.occlusion_patch, "occlusion_stride": p.occlusion_stride,
                    "input_size": spec.input_size}  # fmt: skip
            heat = staging.commit(workdir / HEATMAPS, meta)
        except BaseException:
            staging.discard()
            raise
        write_parquet(preds, workdir / PREDICTIONS)
        if methods:
            _overview(TileStore(workdir / "tiles"), heat, preds, methods,
                      workdir / HEATMAPS / "top.png")  # fmt: skip
        summary.seconds = time.perf_counter() - t0
        n_scored = len(manifest) - summary.n_reused
        summary.tiles_per_s = n_scored / max(work_seconds, 1e-9)
        atomic_write_json(workdir / STAMP, {
            "fingerprint": fp, "slides": slides, "model": spec.source, "kind": spec.kind,
            "class_names": list(clf.class_names), "explained_class": clf.explained_class,
            "n_outputs": clf.n_outputs, "input_size": spec.input_size,
            "mean": spec.mean, "std": spec.std, "methods": methods, "n_tiles": len(manifest),
            "n_scored": n_scored, "seconds": round(summary.seconds, 2),
            "tiles_per_s": round(summary.tiles_per_s, 1),
        })  # fmt: skip
    return summary
