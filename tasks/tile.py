"""The tiling stage on Ray: one planning task per slide, then read tasks over shard-aligned
parts of its tile array; the driver commits each slide when all its parts are written.

Radiology cohorts (``modality: radiology``): tasks of ``radiology.images_per_task`` images each
decode and tile their images (one grey tile per image) into staging arrays; the driver commits
every image as it comes back, so a failed image never holds up the others."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import ray
from tqdm import tqdm

from pipeline.cohort import read_cohort
from pipeline.config import Config, RadiologyConfig, StorageConfig, TilingConfig
from pipeline.io.files import atomic_write_yaml, workdir_lock
from pipeline.io.paths import WorkPath
from pipeline.io.tile_store import TileStore
from pipeline.slides import SlideError, open_slide
from pipeline.tiling import (
    ImagePlan,
    SlidePlan,
    image_record,
    image_rows,
    is_done,
    plan_slide,
    read_tiles,
    slide_fingerprint,
    slide_record,
    slides_table,
    tile_rows,
    tiles_table,
    try_plan_image,
)
from tasks.runtime import ensure_ray

log = logging.getLogger("stylepath")


@dataclass
class TilingSummary:
    n_slides: int = 0
    n_ok: int = 0
    n_failed: int = 0
    n_skipped: int = 0
    manifests_written: bool = False
    n_tiles: int = 0
    n_tiles_read: int = 0
    seconds: float = 0.0
    failed: dict[str, str] = field(default_factory=dict)


@ray.remote
def _plan_task(
    slide_id: str,
    path: str,
    cohort_mpp: float | None,
    tiling: TilingConfig,
    storage: StorageConfig,
    store_root: WorkPath,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        plan = plan_slide(open_slide(path), slide_id, path, cohort_mpp, tiling)
    except SlideError as exc:
        return {"error": str(exc), "seconds": time.perf_counter() - t0}
    staging = TileStore(store_root).create_staging(slide_id, plan.n_tiles, tiling.size, storage)
    return {"plan": plan, "staging": staging, "seconds": time.perf_counter() - t0}


@ray.remote
def _read_task(plan: SlidePlan, staging: WorkPath, start: int, stop: int, shard: int) -> dict:
    t0 = time.perf_counter()
    try:
        slide = open_slide(plan.path)
        for a in range(start, stop, shard):  # one shard in memory at a time
            b = min(a + shard, stop)
            TileStore.write_tiles(staging, a, read_tiles(slide, plan, a, b))
    except SlideError as exc:
        return {"error": str(exc), "seconds": time.perf_counter() - t0}
    return {"n": stop - start, "seconds": time.perf_counter() - t0}


@ray.remote
def _image_task(
    items: list[tuple[str, str, float | None, int | None]],
    tiling: TilingConfig,
    radiology: RadiologyConfig,
    storage: StorageConfig,
    store_root: str,
) -> list[dict[str, Any]]:
    """Decode and tile radiology images; each tile goes to its own staging array."""
    out = []
    store = TileStore(store_root)
    for sid, path, mpp, frame in items:
        t0 = time.perf_counter()
        system = False
        try:
            plan, error = try_plan_image(sid, path, mpp, frame, tiling, radiology)
        except Exception as exc:  # noqa: BLE001 - a bug or an odd file: this image only
            plan, system = None, True
            error = f"{path}: unexpected error reading the image ({type(exc).__name__}: {exc})"
        res: dict[str, Any] = {"slide_id": sid, "error": error, "plan": plan, "system": system}
        if plan is not None:
            staging = store.create_staging(sid, 1, tiling.size, storage, channels=1)
            TileStore.write_tiles(staging, 0, plan.tile[None])
            res["staging"] = staging
        res["seconds"] = time.perf_counter() - t0
        out.append(res)
    return out


def _submit_images(
    cfg: Config,
    store: TileStore,
    jobs: dict[str, _SlideJob],
    cohort_mpp: dict[str, Any],
    frames: dict[str, int | None],
) -> dict[ray.ObjectRef, list[str]]:
    """Launch the image tasks, ``radiology.images_per_task`` images each → their slide ids."""
    rc = cfg.ray
    fn = _image_task.options(num_cpus=rc.tile_task_cpus, max_retries=rc.max_retries)
    items = [(sid, job.path, cohort_mpp.get(sid), frames.get(sid)) for sid, job in jobs.items()]
    k = cfg.radiology.images_per_task
    return {
        fn.remote(items[a : a + k], cfg.tiling, cfg.radiology, cfg.storage, str(store.root)): [
            it[0] for it in items[a : a + k]
        ]
        for a in range(0, len(items), k)
    }


def _lost_image_results(
    jobs: dict[str, _SlideJob], sids: list[str], exc: Exception
) -> list[dict[str, Any]]:
    """The results of an image task that failed as a whole: a system failure of each image."""
    return [
        {
            "slide_id": s,
            "plan": None,
            "seconds": 0.0,
            "system": True,
            "error": f"{jobs[s].path}: image task failed: {type(exc).__name__}: {exc}",
        }
        for s in sids
    ]


def _commit_image(
    store: TileStore,
    job: _SlideJob,
    r: dict[str, Any],
    summary: TilingSummary,
    records: dict[str, dict],
) -> None:
    """Commit one image's result, tiled or failed, and count it in ``summary``."""
    plan: ImagePlan | None = r["plan"]
    if r["error"] or plan is None:
        rec = image_record(
            job.slide_id,
            job.path,
            job.fingerprint,
            error=r["error"],
            cacheable=not r.get("system"),
            seconds=r["seconds"],
        )
        store.commit_failed(job.slide_id, rec, r.get("staging"))
        summary.n_failed += 1
        summary.failed[job.slide_id] = r["error"]
    else:
        rec = image_record(job.slide_id, job.path, job.fingerprint, plan=plan, seconds=r["seconds"])
        store.commit_ok(job.slide_id, r["staging"], image_rows(plan), rec)
        summary.n_ok += 1
        summary.n_tiles_read += 1
    records[job.slide_id] = rec


def _tile_images(
    cfg: Config,
    store: TileStore,
    jobs: dict[str, _SlideJob],
    cohort_mpp: dict[str, Any],
    frames: dict[str, int | None],
    summary: TilingSummary,
    records: dict[str, dict],
    progress: bool,
) -> None:
    """Tile pending radiology images, committing each image as its task comes back."""
    inflight = _submit_images(cfg, store, jobs, cohort_mpp, frames)
    bar = tqdm(total=len(jobs), unit="image", desc="tiling", disable=not progress, file=sys.stderr)
    while inflight:
        ready, _ = ray.wait(list(inflight), num_returns=1)
        sids = inflight.pop(ready[0])
        try:
            results = ray.get(ready[0])
        except Exception as exc:  # noqa: BLE001 - lost worker after retries, or a bug
            results = _lost_image_results(jobs, sids, exc)
        for r in results:
            _commit_image(store, jobs[r["slide_id"]], r, summary, records)
            bar.update(1)
        bar.set_postfix(ok=summary.n_ok, failed=summary.n_failed, refresh=False)
    bar.close()


def split_parts(n_tiles: int, tiles_per_task: int, shard: int) -> list[tuple[int, int]]:
    """Shard-aligned ``[start, stop)`` ranges of about ``tiles_per_task`` tiles."""
    step = max(shard, (tiles_per_task + shard - 1) // shard * shard)
    return [(a, min(a + step, n_tiles)) for a in range(0, n_tiles, step)]


@dataclass
class _SlideJob:
    slide_id: str
    path: str
    fingerprint: str
    seconds: float = 0.0
    plan: SlidePlan | None = None
    staging: WorkPath | None = None
    parts_left: int = 0
    failed: bool = False


def _fail_slide(
    store: TileStore,
    job: _SlideJob,
    error: str,
    cacheable: bool,
    summary: TilingSummary,
    records: dict[str, dict],
) -> None:
    """Commit a slide as failed; its later results are ignored."""
    job.failed = True
    rec = slide_record(
        job.slide_id,
        job.path,
        job.fingerprint,
        plan=job.plan,
        error=error,
        cacheable=cacheable,
        seconds=job.seconds,
    )
    store.commit_failed(job.slide_id, rec, job.staging)
    records[job.slide_id] = rec
    summary.n_failed += 1
    summary.failed[job.slide_id] = error


def _commit_slide(
    store: TileStore, job: _SlideJob, summary: TilingSummary, records: dict[str, dict]
) -> None:
    """Commit a slide whose tiles are all written."""
    assert job.plan is not None and job.staging is not None
    rec = slide_record(job.slide_id, job.path, job.fingerprint, plan=job.plan, seconds=job.seconds)
    store.commit_ok(job.slide_id, job.staging, tile_rows(job.plan), rec)
    records[job.slide_id] = rec
    summary.n_ok += 1


def _submit_plans(
    plan_fn: Any,
    cfg: Config,
    store: TileStore,
    jobs: dict[str, _SlideJob],
    cohort_mpp: dict[str, Any],
) -> dict[ray.ObjectRef, tuple[str, str]]:
    """Launch one planning task per pending slide → ``("plan", slide_id)``."""
    inflight: dict[ray.ObjectRef, tuple[str, str]] = {}
    for sid, job in jobs.items():
        ref = plan_fn.remote(
            sid, job.path, cohort_mpp.get(sid), cfg.tiling, cfg.storage, store.root
        )  # a path object: a URL keeps its storage options
        inflight[ref] = ("plan", sid)
    return inflight


def _submit_reads(
    read_fn: Any,
    job: _SlideJob,
    parts: list[tuple[int, int]],
    shard: int,
    inflight: dict[ray.ObjectRef, tuple[str, str]],
) -> None:
    """Launch one read task per part of a planned slide → ``("read", slide_id)``."""
    plan_ref = ray.put(job.plan)
    job.parts_left = len(parts)
    for a, b in parts:
        inflight[read_fn.remote(plan_ref, job.staging, a, b, shard)] = ("read", job.slide_id)


def _tile_pending(
    cfg: Config,
    store: TileStore,
    jobs: dict[str, _SlideJob],
    cohort_mpp: dict[str, Any],
    summary: TilingSummary,
    records: dict[str, dict],
    progress: bool,
) -> None:
    """Plan and read pending slides, committing each slide when all its parts are written."""
    rc = cfg.ray
    opts = {"num_cpus": rc.tile_task_cpus, "max_retries": rc.max_retries}
    plan_fn = _plan_task.options(**opts)
    read_fn = _read_task.options(**opts)
    shard = cfg.storage.tiles_per_shard
    inflight = _submit_plans(plan_fn, cfg, store, jobs, cohort_mpp)
    bar = tqdm(total=0, unit="tile", desc="tiling", disable=not progress, file=sys.stderr)
    while inflight:
        ready, _ = ray.wait(list(inflight), num_returns=1)
        kind, sid = inflight.pop(ready[0])
        job = jobs[sid]
        try:
            result = ray.get(ready[0])
        except Exception as exc:  # noqa: BLE001 - lost worker after retries, or a bug
            if not job.failed:
                error = f"{job.path}: {kind} task failed: {type(exc).__name__}: {exc}"
                _fail_slide(store, job, error, False, summary, records)
            continue
        job.seconds += result["seconds"]
        if job.failed:
            continue
        if "error" in result:
            _fail_slide(store, job, result["error"], True, summary, records)
        elif kind == "plan":
            job.plan, job.staging = result["plan"], result["staging"]
            parts = split_parts(job.plan.n_tiles, rc.tiles_per_task, shard)
            bar.total += job.plan.n_tiles
            bar.refresh()
            if not parts:
                _commit_slide(store, job, summary, records)
                continue
            _submit_reads(read_fn, job, parts, shard, inflight)
        else:
            bar.update(result["n"])
            summary.n_tiles_read += result["n"]
            job.parts_left -= 1
            if job.parts_left == 0:
                _commit_slide(store, job, summary, records)
        bar.set_postfix(ok=summary.n_ok, failed=summary.n_failed, refresh=False)
    bar.close()


def _cohort_overrides(
    cohort: pd.DataFrame, radiology: bool
) -> tuple[dict[str, float | None], dict[str, int | None]]:
    """Per-slide ``mpp`` and (radiology only) ``frame`` overrides of the cohort table."""
    has_mpp = "mpp" in cohort.columns
    cohort_mpp = {
        r.slide_id: (None if not has_mpp or pd.isna(r.mpp) else float(r.mpp))
        for r in cohort.itertuples()
    }
    has_frame = radiology and "frame" in cohort.columns
    frames = {
        r.slide_id: (None if not has_frame or pd.isna(r.frame) else int(r.frame))
        for r in cohort.itertuples()
    }
    return cohort_mpp, frames


def _pending_jobs(
    cohort: pd.DataFrame,
    store: TileStore,
    config_hash: str,
    cohort_mpp: dict[str, float | None],
    frames: dict[str, int | None],
    radiology: bool,
    summary: TilingSummary,
    records: dict[str, dict],
) -> dict[str, _SlideJob]:
    """The slides to tile; those done with the same fingerprint keep their record (skipped)."""
    jobs: dict[str, _SlideJob] = {}
    for row in cohort.itertuples():
        fp = slide_fingerprint(
            row.path,
            cohort_mpp[row.slide_id],
            config_hash,
            frames[row.slide_id] if radiology else None,
        )
        rec = store.record(row.slide_id)
        if is_done(rec, fp):
            records[row.slide_id] = rec
            summary.n_skipped += 1
            if rec["status"] != "ok":
                summary.n_failed += 1
                summary.failed[row.slide_id] = rec["error"]
        else:
            jobs[row.slide_id] = _SlideJob(row.slide_id, row.path, fp)
    return jobs


def run_tiling(cfg: Config, progress: bool | None = None) -> TilingSummary:
    """Tile every pending slide of the cohort and write the manifests (see ``TileStore``)."""
    t0 = time.perf_counter()
    if progress is None:
        progress = sys.stderr.isatty()
    cohort = read_cohort(cfg.cohort)
    store = TileStore(cfg.workdir / "tiles")
    summary = TilingSummary(n_slides=len(cohort))
    with workdir_lock(store.root):
        store.ensure()
        atomic_write_yaml(cfg.workdir / "config.yaml", cfg.dump())
        atomic_write_yaml(store.root / "config.yaml", cfg.dump())
        radiology = cfg.modality == "radiology"
        config_hash = (
            cfg.section_hash("tiling", "storage", "radiology", "modality")
            if radiology
            else cfg.section_hash("tiling", "storage")
        )
        cohort_mpp, frames = _cohort_overrides(cohort, radiology)
        records: dict[str, dict] = {}
        jobs = _pending_jobs(
            cohort, store, config_hash, cohort_mpp, frames, radiology, summary, records
        )
        if jobs:
            store.clear_staging()
            ensure_ray(cfg.ray)
            if radiology:
                _tile_images(cfg, store, jobs, cohort_mpp, frames, summary, records, progress)
            else:
                _tile_pending(cfg, store, jobs, cohort_mpp, summary, records, progress)
        ordered = [records[s] for s in cohort["slide_id"]]
        slides = slides_table(ordered)
        ok_ids = [r["slide_id"] for r in ordered if r["status"] == "ok"]
        tiles = tiles_table(cohort, [store.rows(s) for s in ok_ids])
        summary.manifests_written = store.write_manifests(tiles, slides)
    summary.n_ok = len(ok_ids)
    summary.n_tiles = len(tiles)
    summary.seconds = time.perf_counter() - t0
    return summary
