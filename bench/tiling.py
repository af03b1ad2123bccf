"""Benchmark the tiling stage against a plain single-process openslide loop; prints JSON.

Cohort: synthetic H&E slides of 8192² px at 0.25 µm/px (pyramid TIFFs); tiles of 256 px at
0.5 µm/px. The baseline reads the very same tile coordinates with ``read_region`` at level 0
and resizes them (what a naive tiler does), without planning or writing anything. The stage
is timed end to end (planning, tissue detection, reading, zarr writes, manifests) on a warm
local Ray. Peak memory is sampled over the driver and the Ray worker processes, for half the
cohort and for the whole cohort, to show it does not grow with cohort size.

    python bench/tiling.py [--slides 8] [--out work/bench]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

from pipeline.config import config_from_dict
from pipeline.io.tile_store import TileStore
from pipeline.slides import open_slide
from pipeline.slides.read import read_region_rgb
from pipeline.tiling import plan_slide
from tasks.make_cohort import make_cohort
from tasks.runtime import ensure_ray
from tasks.tile import run_tiling


class RssSampler:
    """Peak RSS (MiB) of the Ray worker processes (max of one, and sum) while running."""

    def __init__(self) -> None:
        self.peak_worker = 0.0
        self.peak_workers_sum = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = []
            for p in psutil.process_iter(["cmdline", "memory_info"]):
                cmd = " ".join(p.info["cmdline"] or [])
                if cmd.startswith("ray::") and p.info["memory_info"] is not None:
                    rss.append(p.info["memory_info"].rss / 2**20)
            if rss:
                self.peak_worker = max(self.peak_worker, max(rss))
                self.peak_workers_sum = max(self.peak_workers_sum, sum(rss))
            time.sleep(0.1)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def plain_loop(cohort_rows, cfg, best_level: bool = False) -> tuple[int, float]:
    """Single process: read_region at level 0 + resize over the stage's own tile coordinates.

    With ``best_level`` the loop reads from the level the stage picks (isolates what the
    stage gains from parallelism alone, net of its planning, zarr writes and Ray overhead).
    """
    plans = []
    for row in cohort_rows:
        slide = open_slide(row["path"])
        plans.append((slide, plan_slide(slide, row["slide_id"], row["path"], None, cfg.tiling)))
    n = 0
    t0 = time.perf_counter()
    for slide, plan in plans:
        g = plan.grid
        level, w, h = (
            (g.level, g.read_w, g.read_h)
            if best_level
            else (0, round(g.footprint_w0), round(g.footprint_h0))
        )
        for x, y in zip(g.xs, g.ys, strict=True):
            rgb = read_region_rgb(slide, int(x), int(y), level, w, h)
            tile = np.asarray(Image.fromarray(rgb).resize((256, 256), Image.Resampling.BILINEAR))
            n += tile.shape[0] > 0
    return n, time.perf_counter() - t0


def stage_run(cohort_csv: Path, workdir: Path) -> dict:
    shutil.rmtree(workdir, ignore_errors=True)
    cfg = config_from_dict(
        {
            "cohort": str(cohort_csv),
            "workdir": str(workdir),
            "tiling": {"mpp": 0.5, "size": 256, "min_tissue": 0.5},
            "storage": {"tiles_per_chunk": 1, "tiles_per_shard": 64},
            "ray": {"num_cpus": 2, "tiles_per_task": 512},
        }
    )
    with RssSampler() as rss:
        t0 = time.perf_counter()
        summary = run_tiling(cfg, progress=False)
        seconds = time.perf_counter() - t0
    return {
        "cfg": cfg,
        "tiles": summary.n_tiles,
        "seconds": round(seconds, 2),
        "tiles_per_s": round(summary.n_tiles / seconds, 1),
        "peak_rss_worker_mib": round(rss.peak_worker),
        "peak_rss_workers_sum_mib": round(rss.peak_workers_sum),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slides", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("work/bench"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    full = make_cohort(args.out / "cohort", n_slides=args.slides, seed=1, size_um=2048, mpp=0.25)
    gen_seconds = time.perf_counter() - t0
    import pandas as pd

    cohort = pd.read_csv(full)
    half_csv = args.out / "cohort_half.csv"
    half = cohort.iloc[: max(1, args.slides // 2)].copy()
    half["path"] = [str((full.parent / p).absolute()) for p in half["path"]]
    half.to_csv(half_csv, index=False)

    from pipeline.config import RayConfig

    ensure_ray(RayConfig(num_cpus=2))
    small = stage_run(half_csv, args.out / "work_half")
    big = stage_run(full, args.out / "work_full")
    rows = TileStore(big["cfg"].workdir / "tiles").read_slides()
    n_plain, plain_s = plain_loop(rows.to_dict(orient="records"), big["cfg"])
    n_best, best_s = plain_loop(rows.to_dict(orient="records"), big["cfg"], best_level=True)
    assert n_plain == n_best == big["tiles"]
    slide_px = int(2048 / 0.25)
    result = {
        "benchmark": "tiling",
        "cohort": f"{args.slides} synthetic slides {slide_px}x{slide_px} px at 0.25 um/px",
        "tiles": "256 px at 0.5 um/px, min_tissue 0.5",
        "cohort_generation_s": round(gen_seconds, 1),
        "n_tiles": big["tiles"],
        "stage_s": big["seconds"],
        "stage_tiles_per_s": big["tiles_per_s"],
        "plain_loop_s": round(plain_s, 2),
        "plain_loop_tiles_per_s": round(n_plain / plain_s, 1),
        "speedup": round(big["tiles_per_s"] / (n_plain / plain_s), 2),
        "plain_loop_same_level_tiles_per_s": round(n_best / best_s, 1),
        "speedup_vs_same_level_loop": round(big["tiles_per_s"] / (n_best / best_s), 2),
        "peak_rss_worker_mib": {
            "half_cohort": small["peak_rss_worker_mib"],
            "full_cohort": big["peak_rss_worker_mib"],
        },
        "peak_rss_workers_sum_mib": {
            "half_cohort": small["peak_rss_workers_sum_mib"],
            "full_cohort": big["peak_rss_workers_sum_mib"],
        },
        "peak_rss_driver_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "ray_cpus": 2,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
