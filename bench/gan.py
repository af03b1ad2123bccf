"""Benchmark GAN training speed; prints JSON.

Images/s of the same training step (a) in a plain single-process loop without Ray, (b) with
Ray Train and 1 CPU worker, (c) with Ray Train and 2 CPU workers, at the same total batch;
the Ray Train overhead is 1 − (b) / (a). Steady-state rates come from ``sec_per_kimg`` of the
ticks after the first (start-up and warm-up excluded). Needs a tiled workdir whose tile size
matches the preset (``make demo`` gives 64 px tiles for tiny64).

    python bench/gan.py [--workdir work/demo] [--preset tiny64] [--kimg 0.64]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import time
from pathlib import Path

import pandas as pd
import torch

from pipeline.config import config_from_dict
from pipeline.gan.data import TileBatches, to_tensor
from pipeline.gan.presets import PRESETS
from pipeline.gan.step import StepConfig, TrainState, train_step
from pipeline.io.tile_store import TileStore
from tasks.train_gan import run_train_gan


def plain_loop(store: TileStore, preset: str, batch: int, steps: int, threads: int) -> float:
    torch.set_num_threads(threads)
    cfg = StepConfig(batch_size=batch)
    state = TrainState.create(PRESETS[preset], cfg)
    batches = TileBatches(store, store.read_manifest(), batch, seed=0)
    train_step(state, to_tensor(next(batches)), cfg)  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(state, to_tensor(next(batches)), cfg)
    return steps * batch / (time.perf_counter() - t0)


def ray_train(tiles: Path, out: Path, preset: str, batch: int, kimg: float, workers: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "tiles").symlink_to(tiles.absolute())
    cfg = config_from_dict(
        {
            "cohort": "unused.csv",
            "workdir": str(out),
            "ray": {"num_cpus": 2},
            "gan": {
                "preset": preset,
                "batch_size": batch,
                "total_kimg": kimg,
                "tick_kimg": kimg / 4,
                "metric_ticks": 1000,
                "metric_images": 16,
                "sample_ticks": 1000,
                "num_workers": workers,
                "cpus_per_worker": 2 // workers,
            },
        }
    )
    run_train_gan(cfg)
    metrics = pd.read_parquet(out / "gan" / "metrics.parquet")
    return 1000.0 / metrics["sec_per_kimg"].iloc[1:].mean()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=Path("work/demo"))
    ap.add_argument("--preset", default="tiny64")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--kimg", type=float, default=1.28)
    args = ap.parse_args()
    store = TileStore(args.workdir / "tiles")
    steps = max(4, int(args.kimg * 1000 / args.batch / 2))
    plain = plain_loop(store, args.preset, args.batch, steps, threads=2)
    one = ray_train(store.root, Path("work/bench/gan1"), args.preset, args.batch, args.kimg, 1)
    two = ray_train(store.root, Path("work/bench/gan2"), args.preset, args.batch, args.kimg, 2)
    print(
        json.dumps(
            {
                "benchmark": "gan_training",
                "preset": args.preset,
                "total_batch": args.batch,
                "plain_loop_img_per_s": round(plain, 1),
                "ray_train_1_worker_img_per_s": round(one, 1),
                "ray_train_2_workers_img_per_s": round(two, 1),
                "ray_train_overhead_1_worker": round(1 - one / plain, 3),
                "peak_rss_driver_mib": round(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                ),
                "torch_threads_total": 2,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
