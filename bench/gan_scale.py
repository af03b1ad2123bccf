"""Memory and speed of one full paper256 training step; prints JSON (the last line).

One step of ``train_step`` — D main with lazy R1, G main with lazy path length (the first
step takes every lazy term) — in a fresh subprocess per (variant, batch size), with the
cluster config's GAN settings (``configs/cluster.yaml``): ``cpu_mib_per_image`` is the slope
of the process's peak RSS between the two batch sizes (model, optimizer and start-up cancel
out), ``img_per_s`` the larger batch over its step time. Variants: ``baseline`` (no
activation checkpointing) and ``new`` (``--checkpoint-res``, default the cluster config's
``gan.checkpoint_res``). ``cluster_fits_gpu_gib``: whether the cluster config's batch per GPU
× the new per-image memory fits the worker node type's GPU memory (``ray_cluster.yaml``) with
20 % headroom. ``gpu``: with CUDA, seconds/kimg and peak GiB at batch 16 and 32; else "not
measured".

    PYTHONPATH=. python bench/gan_scale.py [--batches 2 4] [--checkpoint-res 64]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from pipeline.config import load_config
from pipeline.gan.presets import preset_spec
from pipeline.gan.step import TrainState, train_step
from tasks.train_gan import step_config

ROOT = Path(__file__).resolve().parents[1]
GPU_GIB = {"g5.2xlarge": 24, "g5.xlarge": 24, "g6.2xlarge": 24, "p4d.24xlarge": 40}


def one_step(batch: int, checkpoint_res: int, device: str = "cpu") -> dict:
    """Build paper256 with the cluster settings and run one step of ``batch`` images."""
    cfg = load_config(ROOT / "configs" / "cluster.yaml")
    g = cfg.gan.model_copy(update={"checkpoint_res": checkpoint_res, "batch_size": batch})
    scfg = step_config(g, 1)
    state = TrainState.create(preset_spec("paper256"), scfg, seed=0, device=device)
    real = torch.rand(batch, 3, 256, 256, device=device) * 2 - 1
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    train_step(state, real, scfg)
    if device == "cuda":
        torch.cuda.synchronize()
    out = {"batch": batch, "seconds": round(time.perf_counter() - t0, 2)}
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if device == "cuda":
        out["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def child(batch: int, checkpoint_res: int, device: str) -> dict:
    """``one_step`` in a fresh interpreter (its peak RSS is this step's alone)."""
    cmd = [sys.executable, __file__, "--child", str(batch), str(checkpoint_res), device]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def variant(batches: list[int], checkpoint_res: int) -> dict:
    runs = [child(b, checkpoint_res, "cpu") for b in batches]
    (a, b) = runs[0], runs[-1]
    slope = (b["peak_rss_mib"] - a["peak_rss_mib"]) / (b["batch"] - a["batch"])
    return {
        "checkpoint_res": checkpoint_res,
        "runs": runs,
        "cpu_mib_per_image": round(slope, 1),
        "img_per_s": round(b["batch"] / b["seconds"], 3),
    }


def cluster_fit(mib_per_image: float) -> dict:
    cfg = load_config(ROOT / "configs" / "cluster.yaml")
    nodes = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())["available_node_types"]
    types = [n["node_config"]["InstanceType"] for n in nodes.values()]
    node = next((t for t in types if t in GPU_GIB), types[-1])
    per_gpu = cfg.gan.batch_size // cfg.gan.num_workers
    need = per_gpu * mib_per_image / 1024
    return {
        "node_type": node,
        "gpu_gib": GPU_GIB.get(node),
        "batch_per_gpu": per_gpu,
        "need_gib": round(need, 2),
        "fits": GPU_GIB.get(node) is not None and need <= 0.8 * GPU_GIB[node],
    }


def gpu_figures(checkpoint_res: int) -> dict | str:
    if not torch.cuda.is_available():
        return "not measured"
    out = {"card": torch.cuda.get_device_name(0)}
    for b in (16, 32):
        r = child(b, checkpoint_res, "cuda")
        out[f"batch{b}"] = {"sec_per_kimg": round(r["seconds"] * 1000 / b, 1), **r}
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
        batch, ckpt, device = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
        print(json.dumps(one_step(batch, ckpt, device)))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, nargs=2, default=[2, 4])
    ap.add_argument("--checkpoint-res", type=int, default=None)
    args = ap.parse_args()
    cfg = load_config(ROOT / "configs" / "cluster.yaml")
    ckpt = cfg.gan.checkpoint_res if args.checkpoint_res is None else args.checkpoint_res
    base = variant(args.batches, 0)
    new = variant(args.batches, ckpt)
    out = {
        "preset": "paper256",
        "machine": f"{os.cpu_count()} CPUs",
        "baseline": base,
        "new": new,
        "baseline_cpu_mib_per_image": base["cpu_mib_per_image"],
        "cpu_mib_per_image": new["cpu_mib_per_image"],
        "ratio": round(base["cpu_mib_per_image"] / max(new["cpu_mib_per_image"], 1e-9), 2),
        "cluster": cluster_fit(new["cpu_mib_per_image"]),
        "gpu": gpu_figures(ckpt),
    }
    out["cluster_fits_gpu_gib"] = out["cluster"]["fits"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
