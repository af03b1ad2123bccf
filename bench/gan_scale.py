"""Memory and speed of paper256 training, inversion and analysis; prints JSON (the last line).

Every figure is measured in a fresh subprocess per (job, batch size), with the cluster
config's settings (``configs/cluster.yaml``); ``*_mib_per_image`` is the slope of the
process's peak RSS between the two batch sizes (model, optimizer and start-up cancel out).

- ``train``: one step of ``train_step`` — D main with lazy R1, G main with lazy path length
  (the first step takes every lazy term). ``baseline`` is the paper256 of before 2026-12-07
  (config F's channels, no activation checkpointing); ``new`` is today's preset with the
  cluster's ``gan.checkpoint_res``, in float32 as a CPU trains; ``new_low_precision`` adds
  the preset's mixed precision in bfloat16 (what CPU autocast supports), as a CPU proxy of
  the GPU's float16 activations. ``cpu_mib_per_image`` is ``new``'s.
- ``encode``: one step of training the encoder (its pixel and SSIM terms back-propagate
  through G); ``invert``: one W+ refinement step (synthesis, the loss with D's features,
  backward) per tile; ``analyze``: rendering and scoring one shifted frame (no gradients).
- ``cluster``: whether the cluster config's batch per GPU × the per-image memory (the GPU
  figure when measured, else the CPU one) fits the worker node type's GPU memory
  (``ray_cluster.yaml``) with 20 % headroom: training (``gan.batch_size`` /
  ``gan.num_workers``), the encoder's task (``inversion.encoder.batch``), an inversion
  actor (``inversion.batch_size`` tiles), an analysis actor (``analysis.batch_size`` tiles ×
  ``len(analysis.alphas)`` frames).
- ``gpu``: with CUDA, s/kimg and peak GiB of the new training step at batch 16 and 32 (float16
  from the preset's resolution) and each other stage's peak GiB at its cluster batch, which
  ``cluster`` then uses; else "not measured".

    PYTHONPATH=. python bench/gan_scale.py

The batch pairs (``BATCHES``) are as far apart as each job's run time allows: a two-point
slope of peak RSS moves by tens of MiB between runs (the analysis frame read 116-184 MiB at
batches 2 and 4).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from pipeline.classifier.model import tile_cnn
from pipeline.config import load_config
from pipeline.gan.generator import TrainedGenerator
from pipeline.gan.networks import Discriminator, Generator
from pipeline.gan.presets import FP16_RES, preset_spec
from pipeline.gan.step import TrainState, train_step
from pipeline.inversion.encoder import Encoder
from pipeline.inversion.losses import DFeatures
from pipeline.inversion.refine import refine
from pipeline.inversion.train_encoder import EncoderLoss, encoder_step, sample_pairs
from tasks.invert import encoder_spec, refine_settings
from tasks.train_gan import step_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "configs" / "cluster.yaml"
GPU_GIB = {"g5.2xlarge": 24, "g5.xlarge": 24, "g6.2xlarge": 24, "p4d.24xlarge": 40}
# paper256 before 2026-12-07: StyleGAN2 config F (channel base 32 k; G 30.0 M parameters)
CONFIG_F = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128}
VARIANTS = ("baseline", "new", "new_low_precision")
BATCHES = {"train": (2, 4), "encode": (4, 8), "invert": (4, 8), "analyze": (4, 16)}


def paper256_generator(device: str) -> TrainedGenerator:
    """A fresh paper256 G_ema with its W statistics, on ``device``."""
    gen = TrainedGenerator(Generator(preset_spec("paper256")), {}, n_stats=1000)
    gen.G.to(device)
    gen.w_mean, gen.w_std = gen.w_mean.to(device), gen.w_std.to(device)
    return gen


def train_once(batch: int, variant: str, device: str) -> Callable[[], object]:
    """One training step of ``variant`` on ``batch`` images."""
    g = load_config(CLUSTER).gan.model_copy(update={"batch_size": batch})
    spec = preset_spec("paper256")
    if variant == "baseline":
        spec = dataclasses.replace(spec, channels=CONFIG_F)
        g = g.model_copy(update={"checkpoint_res": 0})
    scfg = step_config(g, 1, device)
    if variant == "new_low_precision":
        scfg = dataclasses.replace(scfg, fp16_res=FP16_RES["paper256"])
    state = TrainState.create(spec, scfg, seed=0, device=device)
    real = torch.rand(batch, 3, 256, 256, device=device) * 2 - 1
    return lambda: train_step(state, real, scfg)


def invert_once(batch: int, device: str) -> Callable[[], object]:
    """One W+ refinement step of ``batch`` tiles with D's features."""
    cfg = load_config(CLUSTER)
    spec = preset_spec("paper256")
    gen = paper256_generator(device)
    feats = DFeatures(Discriminator(spec)).to(device)
    target = torch.rand(batch, 3, 256, 256, device=device)
    w0 = gen.w_mean.to(device).expand(batch, spec.num_ws, -1).clone()
    s = refine_settings(cfg.inversion.refine, steps=1)
    return lambda: refine(gen, w0, target, s, feats)


def encode_once(batch: int, device: str) -> Callable[[], object]:
    """One step of training the encoder (through G: its pixel and SSIM terms) on ``batch``
    generator samples."""
    cfg = load_config(CLUSTER)
    e = cfg.inversion.encoder
    gen = paper256_generator(device)
    E = Encoder(encoder_spec(gen, cfg.inversion), gen.w_mean, gen.w_std).to(device)
    opt = torch.optim.Adam(E.parameters(), lr=e.lr)
    loss = EncoderLoss(
        latent=e.latent_weight, pixel=e.pixel_weight, ssim=e.ssim_weight, truncation_mix=0.0
    )
    x, w = sample_pairs(gen, batch, 0.0, torch.Generator().manual_seed(0))
    return lambda: encoder_step(gen, E, opt, x, w, loss)


def analyze_once(batch: int, device: str) -> Callable[[], object]:
    """Rendering and scoring ``batch`` frames (no gradients)."""
    gen = paper256_generator(device)
    clf = tile_cnn().to(device).eval()
    w = gen.w_mean.to(device).expand(batch, -1).clone()

    def run() -> None:
        with torch.no_grad():
            clf(gen.synthesis(w))

    return run


def one(job: str, batch: int, device: str) -> dict:
    """Build ``job`` (``train:<variant>``, ``invert``, ``analyze``) and time one call."""
    kind, _, variant = job.partition(":")
    if kind == "train":
        fn = train_once(batch, variant, device)
    else:
        jobs = {"encode": encode_once, "invert": invert_once, "analyze": analyze_once}
        fn = jobs[kind](batch, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    out = {"batch": batch, "seconds": round(time.perf_counter() - t0, 2)}
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if device == "cuda":
        out["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def child(job: str, batch: int, device: str = "cpu") -> dict:
    """``one`` in a fresh interpreter (its peak RSS is this job's alone)."""
    cmd = [sys.executable, __file__, "--child", job, str(batch), device]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def per_image(job: str) -> dict:
    runs = [child(job, b) for b in BATCHES[job.partition(":")[0]]]
    (a, b) = runs[0], runs[-1]
    slope = (b["peak_rss_mib"] - a["peak_rss_mib"]) / (b["batch"] - a["batch"])
    return {
        "runs": runs,
        "mib_per_image": round(slope, 1),
        "img_per_s": round(b["batch"] / b["seconds"], 3),
    }


def stage_images() -> dict[str, int]:
    """Images one GPU holds at once in each stage, by the cluster config."""
    cfg = load_config(CLUSTER)
    return {
        "train": cfg.gan.batch_size // cfg.gan.num_workers,
        "encode": cfg.inversion.encoder.batch,
        "invert": cfg.inversion.batch_size,
        "analyze": cfg.analysis.batch_size * len(cfg.analysis.alphas),
    }


def cluster_fit(need_gib: dict[str, float], source: dict[str, str]) -> dict:
    """Each stage's memory need against the GPU node type's memory, 20 % headroom."""
    nodes = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())["available_node_types"]
    types = [n["node_config"]["InstanceType"] for n in nodes.values()]
    node = next((t for t in types if t in GPU_GIB), types[-1])
    gib = GPU_GIB.get(node)
    out: dict = {"node_type": node, "gpu_gib": gib}
    for stage, n in stage_images().items():
        fits = gib is not None and need_gib[stage] <= 0.8 * gib
        row = {"images_per_gpu": n, "need_gib": round(need_gib[stage], 2), "from": source[stage]}
        out[stage] = row | {"fits": fits}
    out["fits"] = all(out[s]["fits"] for s in stage_images())
    return out


def gpu_figures() -> dict | str:
    """With CUDA: the training step at batch 16 and 32, each other stage at its cluster
    batch (peak GiB allocated)."""
    if not torch.cuda.is_available():
        return "not measured"
    out: dict = {"card": torch.cuda.get_device_name(0)}
    for b in (16, 32):
        r = child("train:new", b, "cuda")
        out[f"batch{b}"] = {"sec_per_kimg": round(r["seconds"] * 1000 / b, 1), **r}
    for stage, n in stage_images().items():
        if stage != "train":
            out[stage] = child(stage, n, "cuda")
    return out


def needs(mib: dict[str, float], gpu: dict | str) -> tuple[dict[str, float], dict[str, str]]:
    """GiB per stage: the GPU's peak where measured, else images × the CPU's MiB per image."""
    images = stage_images()
    need = {s: images[s] * mib[s] / 1024 for s in images}
    source = dict.fromkeys(images, "cpu_mib_per_image")
    if isinstance(gpu, dict):
        need["train"] = gpu["batch32"]["peak_gpu_gib"] * images["train"] / 32
        need |= {s: gpu[s]["peak_gpu_gib"] for s in images if s != "train"}
        source = dict.fromkeys(images, "gpu_peak")
    return need, source


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
        job, batch, device = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        print(json.dumps(one(job, batch, device)))
        return
    argparse.ArgumentParser(description=__doc__).parse_args()
    train = {v: per_image(f"train:{v}") for v in VARIANTS}
    stages = {s: per_image(s) for s in ("encode", "invert", "analyze")}
    gpu = gpu_figures()
    mib = {s: r["mib_per_image"] for s, r in stages.items()}
    mib["train"] = train["new"]["mib_per_image"]
    base, new = train["baseline"]["mib_per_image"], train["new"]["mib_per_image"]
    out = {
        "preset": "paper256",
        "machine": f"{os.cpu_count()} CPUs",
        "train": train,
        **stages,
        "baseline_cpu_mib_per_image": base,
        "cpu_mib_per_image": new,
        "cpu_mib_per_image_low_precision": train["new_low_precision"]["mib_per_image"],
        "ratio": round(base / max(new, 1e-9), 2),
        "cluster": cluster_fit(*needs(mib, gpu)),
        "gpu": gpu,
    }
    out["cluster_fits_gpu_gib"] = out["cluster"]["fits"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
