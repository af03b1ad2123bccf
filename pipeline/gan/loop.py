"""The training loop: steps in ticks; at each tick metrics, the divergence / collapse guard
and a callback (checkpoint, report). No Ray and no files here; ``tasks/train_gan.py`` wires
it to Ray Train and storage."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.gan.metrics import layout_correlation, swd
from pipeline.gan.step import StepConfig, Sync, TrainState, no_sync, train_step

log = logging.getLogger("stylepath")


# (samples, (w, samples of w at constant noise)) -> domain metrics
SampleStats = Callable[[np.ndarray, tuple[np.ndarray, np.ndarray]], dict[str, float]]
RAW_PREFIX = "raw_"  # metrics of the raw G (``LoopConfig.score_raw_g``) carry this prefix


class TrainingDiverged(RuntimeError):
    """Training kept diverging after rolling back to the last good state."""


@dataclass(frozen=True)
class LoopConfig:
    total_nimg: int
    tick_nimg: int
    metric_ticks: int = 5
    metric_images: int = 256
    guard_d_loss: float = 20.0
    guard_diversity: float = 0.2
    max_rollbacks: int = 5
    seed: int = 0
    score_raw_g: bool = False  # also measure the raw G at SWD ticks (``raw_*`` metrics)


def tick_seed(seed: int, rank: int, nimg: int) -> int:
    """RNG seed at a tick boundary: a resumed run replays exactly what the first run drew."""
    return int(np.random.SeedSequence([seed, rank, nimg]).generate_state(1)[0])


def sample_z(G, n: int, seed: int) -> torch.Tensor:
    """The latents z [n, z_dim] that ``generate(G, n, seed)`` draws (float32, CPU)."""
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, G.z_dim))).float()


@torch.no_grad()
def sample_w(G, n: int, seed: int, batch: int = 256) -> np.ndarray:
    """w [n, w_dim] of the samples ``generate(G, n, seed)`` draws (no truncation); leaves
    a training G's mode and running w_avg as they were."""
    dev = next(G.parameters()).device
    was_training = G.training
    G.eval()
    try:
        z = sample_z(G, n, seed)
        return np.concatenate(
            [G.mapping(z[i : i + batch].to(dev)).cpu().numpy() for i in range(0, n, batch)]
        )
    finally:
        G.train(was_training)


def latent_samples(G, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(w [n, w_dim], their uint8 samples at constant noise): what the analysis draws, for
    measuring how the samples' features depend on w."""
    return sample_w(G, n, seed), generate(G, n, seed, noise_mode="const")


@torch.no_grad()
def generate(
    G, n: int, seed: int, batch: int = 64, truncation_psi: float = 1.0, noise_mode: str = "random"
) -> np.ndarray:
    """n images from fixed latents: uint8 [n, H, W, C].

    ``noise_mode="random"`` (default) draws fresh per-sample noise from ``seed`` (so the
    result is still deterministic, and the global RNG is left untouched): that is the
    distribution G was trained to match, and what metrics must see. ``"const"`` uses one
    fixed noise image for every sample: a generator that places structure with its noise
    inputs then shows the same layout in every sample (spread and SWD look worse than G is).
    """
    dev = next(G.parameters()).device
    was_training = G.training
    G.eval()  # sampling must not move a training G's running w_avg
    z = sample_z(G, n, seed).to(dev)
    out = []
    try:
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(seed)
            for i in range(0, n, batch):
                img = G(z[i : i + batch], truncation_psi=truncation_psi, noise_mode=noise_mode)
                img = ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1)
                out.append(img.cpu().numpy())
    finally:
        G.train(was_training)
    return np.concatenate(out)


def spread(images: np.ndarray) -> float:
    """Mean per-pixel standard deviation across a set of images (0 for a collapsed set)."""
    return float(images.astype(np.float32).std(axis=0).mean())


def _quality(
    reals: np.ndarray, G, fakes: np.ndarray, seed: int, sample_stats: SampleStats | None
) -> dict[str, float]:
    """SWD and the domain statistics of one generator's samples ``fakes``; the statistics
    also get latents w with their samples at constant noise (as the analysis draws them)."""
    out = {"swd": swd(reals, fakes, seed=seed)["mean"]}
    if sample_stats is None:
        return out
    return {**out, **sample_stats(fakes, latent_samples(G, len(fakes), seed + 2))}


def _finite(metrics: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in metrics.values())


def train(
    state: TrainState,
    batches: Iterator[torch.Tensor],
    step_cfg: StepConfig,
    cfg: LoopConfig,
    on_tick: Callable[[TrainState, dict[str, float]], None],
    *,
    reals_for_metrics: np.ndarray | None = None,
    sync: Sync = no_sync,
    rank: int = 0,
    world_size: int = 1,
    sample_stats: SampleStats | None = None,
) -> TrainState:
    """Train until ``cfg.total_nimg``; call ``on_tick`` at every tick boundary.

    Guard: a non-finite loss or a D loss above ``guard_d_loss`` (divergence), or G_ema samples
    whose spread falls below ``guard_diversity`` × the reals' (mode collapse), rolls the state
    back to the last good tick, with a warning, instead of training on garbage.
    ``sample_stats(samples, latents)`` adds domain metrics (e.g. nuclei) at the SWD ticks; with
    ``cfg.score_raw_g`` the raw G is measured there too (``raw_swd``, ``raw_<stat>``...).
    """
    real_spread = spread(reals_for_metrics) if reals_for_metrics is not None else None
    good = copy.deepcopy(state.state_dict())
    rollbacks = 0
    tick = 0
    while state.cur_nimg < cfg.total_nimg:
        tick_start, t0 = state.cur_nimg, time.perf_counter()
        torch.manual_seed(tick_seed(cfg.seed, rank, state.cur_nimg))
        end = min(cfg.total_nimg, (state.cur_nimg // cfg.tick_nimg + 1) * cfg.tick_nimg)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        bad = ""
        while state.cur_nimg < end:
            m = train_step(state, next(batches), step_cfg, sync, world_size)
            flag = torch.tensor([0.0 if _finite(m) and m["d_loss"] < cfg.guard_d_loss else 1.0])
            if float(sync(flag)) > 0:  # any worker diverged: all roll back together
                bad = f"diverged at {state.cur_nimg} images (d_loss {m.get('d_loss')})"
                break
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
        metrics = {k: sums[k] / counts[k] for k in sums}
        kimg_done = (state.cur_nimg - tick_start) / 1000
        if not bad and real_spread is not None and rank == 0:
            fakes = generate(state.G_ema, cfg.metric_images, seed=cfg.seed + 1)
            metrics["spread_ratio"] = spread(fakes) / max(real_spread, 1e-6)
            metrics["layout_corr"] = layout_correlation(fakes)
            if metrics["spread_ratio"] < cfg.guard_diversity:
                ratio = metrics["spread_ratio"]
                bad = f"mode collapse at {state.cur_nimg} images (spread ratio {ratio:.2f})"
            elif tick % cfg.metric_ticks == 0 or state.cur_nimg >= cfg.total_nimg:
                q = _quality(reals_for_metrics, state.G_ema, fakes, cfg.seed, sample_stats)
                metrics.update(q)
                if cfg.score_raw_g:
                    raw = generate(state.G, cfg.metric_images, seed=cfg.seed + 1)
                    q = _quality(reals_for_metrics, state.G, raw, cfg.seed, sample_stats)
                    metrics.update({RAW_PREFIX + k: v for k, v in q.items()})
        bad_flag = sync(torch.tensor([1.0 if bad else 0.0]))
        if float(bad_flag) > 0:
            rollbacks += 1
            log.warning(
                "training guard: %s; rolling back to %d images (%d/%d)",
                bad or "another worker",
                good["cur_nimg"],
                rollbacks,
                cfg.max_rollbacks,
            )
            state.load_state_dict(copy.deepcopy(good))
            if rollbacks > cfg.max_rollbacks:
                raise TrainingDiverged(f"gave up after {cfg.max_rollbacks} rollbacks: {bad}")
            continue
        metrics["kimg"] = state.cur_nimg / 1000
        metrics["sec_per_kimg"] = (time.perf_counter() - t0) / max(kimg_done, 1e-9)
        metrics["rollbacks"] = float(rollbacks)
        on_tick(state, metrics)
        good = copy.deepcopy(state.state_dict())
        tick += 1
    return state
