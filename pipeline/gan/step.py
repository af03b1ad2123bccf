"""One StyleGAN2 training step (D then G), lazy regularisation, EMA and the ADA update.

Pure torch: no Ray, no files. Multi-worker runs pass ``sync`` (an all-reduce of gradients
and of the ADA statistic); a single process uses the no-op default.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from pipeline.features.soft import tile_statistics
from pipeline.gan.augment import AugmentPipe, adjust_p
from pipeline.gan.ema import ema_beta, ema_update
from pipeline.gan.losses import (
    d_logistic_loss,
    d_r1_penalty,
    g_nonsaturating_loss,
    g_path_length_penalty,
    g_spread_penalty,
)
from pipeline.gan.networks import Discriminator, Generator, set_mixed_precision
from pipeline.gan.presets import NetworkSpec


@dataclass(frozen=True)
class StepConfig:
    """Hyper-parameters of the training step (the ``gan`` config section maps onto this)."""

    batch_size: int = 32  # per worker
    lr_g: float = 0.002
    lr_d: float = 0.002
    beta2: float = 0.99
    r1_gamma: float = 0.2
    r1_interval: int = 16
    pl_weight: float = 0.0
    pl_interval: int = 4  # lazy interval of the G regularisers (path length, spread)
    spread_weight: float = 0.0  # w carries the reals' spread of tile statistics (0: off)
    spread_low: float = 0.7  # SD ratio (samples at one shared draw / reals) band, no penalty
    spread_high: float = 1.3
    style_mixing: float = 0.9
    ema_kimg: float = 10.0
    ema_rampup: float | None = 0.05
    ada: bool = True
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 100.0
    ada_ops: tuple[str, ...] = AugmentPipe.OPS  # the others get weight 0
    checkpoint_res: int = 0  # G and D blocks at this resolution and finer recompute (0: off)
    fp16_res: int = 0  # G and D blocks at this resolution and finer in low precision (0: off)


Sync = Callable[[torch.Tensor], torch.Tensor]  # all-reduce (mean) across workers


def no_sync(t: torch.Tensor) -> torch.Tensor:
    return t


def average_grads(module: nn.Module, sync: Sync, finite: bool = False) -> None:
    """Average gradients across workers (explicit DDP; works with R1's double backward).
    ``finite``: first replace NaN by 0 and ±inf by ±1e5, as stylegan2-ada does for its
    mixed precision (no loss scaling), so one overflowing step cannot poison Adam's state."""
    params = [p for p in module.parameters() if p.grad is not None]
    if finite:
        for p in params:
            torch.nan_to_num_(p.grad, nan=0.0, posinf=1e5, neginf=-1e5)
    if sync is no_sync or not params:
        return
    flat = torch.cat([p.grad.flatten() for p in params])
    flat = sync(flat)
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def g_reg_interval(cfg: StepConfig) -> int:
    """Steps between G's lazy regularisation passes (0: none is on)."""
    return cfg.pl_interval if cfg.pl_weight > 0 or cfg.spread_weight > 0 else 0


def _lazy_adam(params, lr: float, beta2: float, interval: int) -> torch.optim.Adam:
    """Adam with lr and betas rescaled for lazy regularisation (Karras et al. 2020, B)."""
    c = interval / (interval + 1) if interval > 0 else 1.0
    return torch.optim.Adam(params, lr=lr * c, betas=(0.0, beta2**c), eps=1e-8)


@dataclass
class TrainState:
    """Everything a checkpoint must hold to resume exactly."""

    G: Generator
    D: Discriminator
    G_ema: Generator
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    augment: AugmentPipe
    cur_nimg: int = 0
    step: int = 0
    mean_path_length: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    ada_sum: float = 0.0  # Σ sign(D(real)) since the last ADA update
    ada_count: int = 0

    @classmethod
    def create(
        cls, spec: NetworkSpec, cfg: StepConfig, seed: int = 0, device: str | torch.device = "cpu"
    ) -> TrainState:
        """Fresh networks (identical for a given seed on any device) and optimizers."""
        torch.manual_seed(seed)
        G, D = Generator(spec).to(device), Discriminator(spec).to(device)
        G.synthesis.checkpoint_res = D.checkpoint_res = cfg.checkpoint_res
        set_mixed_precision(G, D, cfg.fp16_res)
        G_ema = copy.deepcopy(G).eval().requires_grad_(False)
        return cls(
            G=G,
            D=D,
            G_ema=G_ema,
            opt_G=_lazy_adam(G.parameters(), cfg.lr_g, cfg.beta2, g_reg_interval(cfg)),
            opt_D=_lazy_adam(D.parameters(), cfg.lr_d, cfg.beta2, cfg.r1_interval),
            augment=AugmentPipe(0.0, **{op: float(op in cfg.ada_ops) for op in AugmentPipe.OPS}).to(
                device
            ),
            mean_path_length=torch.zeros((), device=device),
        )

    @property
    def device(self) -> torch.device:
        return next(self.G.parameters()).device

    def state_dict(self) -> dict:
        return {
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "augment_p": float(self.augment.p),
            "cur_nimg": self.cur_nimg,
            "step": self.step,
            "mean_path_length": self.mean_path_length,
            "ada_sum": self.ada_sum,
            "ada_count": self.ada_count,
            "spec": self.G.spec.to_dict(),  # the architecture G was built with (for exports)
        }

    def load_state_dict(self, sd: dict) -> None:
        self.G.load_state_dict(sd["G"])
        self.D.load_state_dict(sd["D"])
        self.G_ema.load_state_dict(sd["G_ema"])
        self.opt_G.load_state_dict(sd["opt_G"])
        self.opt_D.load_state_dict(sd["opt_D"])
        self.augment.p.fill_(sd["augment_p"])
        self.cur_nimg = int(sd["cur_nimg"])
        self.step = int(sd["step"])
        self.mean_path_length = torch.as_tensor(sd["mean_path_length"]).to(self.device)
        self.ada_sum = float(sd["ada_sum"])
        self.ada_count = int(sd["ada_count"])


def train_step(
    state: TrainState,
    real: torch.Tensor,
    cfg: StepConfig,
    sync: Sync = no_sync,
    world_size: int = 1,
) -> dict[str, float]:
    """One D step and one G step on a batch of reals in [-1, 1]: [N, C, H, W]."""
    G, D, aug = state.G, state.D, state.augment
    n, dev = real.shape[0], real.device
    metrics: dict[str, float] = {}

    # --- D: logistic loss on augmented reals and fakes, plus lazy R1 -------------------
    G.requires_grad_(False)
    D.requires_grad_(True)
    with torch.no_grad():
        fake = G(torch.randn(n, G.z_dim, device=dev), style_mixing_prob=cfg.style_mixing)
    real_logits = D(aug(real))
    fake_logits = D(aug(fake))
    d_loss = d_logistic_loss(real_logits, fake_logits)
    state.opt_D.zero_grad(set_to_none=True)
    d_loss.backward()
    metrics.update(
        d_loss=d_loss.item(),
        real_score=real_logits.mean().item(),
        fake_score=fake_logits.mean().item(),
    )
    state.ada_sum += real_logits.detach().sign().sum().item()
    state.ada_count += n
    if cfg.r1_gamma > 0 and cfg.r1_interval > 0 and state.step % cfg.r1_interval == 0:
        # Gradient w.r.t. the augmented reals D sees (no double backward through the
        # augmentation's grid sampling, which CUDA does not implement).
        real_r1 = aug(real).detach().requires_grad_(True)
        r1 = d_r1_penalty(real_r1, D(real_r1))
        (r1 * (cfg.r1_gamma / 2) * cfg.r1_interval).backward()
        metrics["r1"] = r1.item()
    average_grads(D, sync, finite=cfg.fp16_res > 0)
    state.opt_D.step()

    # --- G: non-saturating loss, optional lazy path-length and spread penalties --------
    G.requires_grad_(True)
    D.requires_grad_(False)
    fake = G(torch.randn(n, G.z_dim, device=dev), style_mixing_prob=cfg.style_mixing)
    g_loss = g_nonsaturating_loss(D(aug(fake)))
    state.opt_G.zero_grad(set_to_none=True)
    g_loss.backward()
    metrics["g_loss"] = g_loss.item()
    if cfg.pl_weight > 0 and state.step % cfg.pl_interval == 0:
        m = max(1, n // 2)
        ws = G.ws_from_z(torch.randn(m, G.z_dim, device=dev), style_mixing_prob=cfg.style_mixing)
        pl, state.mean_path_length, _ = g_path_length_penalty(
            G.synthesis(ws), ws, state.mean_path_length
        )
        (pl * cfg.pl_weight * cfg.pl_interval).backward()
        metrics["pl"] = pl.item()
    if cfg.spread_weight > 0 and state.step % cfg.pl_interval == 0:
        # one fresh draw of noise and input shift for all: only w varies these samples
        images = G(torch.randn(max(2, n // 2), G.z_dim, device=dev), noise_mode="shared")
        spread = g_spread_penalty(
            tile_statistics(images), tile_statistics(real), cfg.spread_low, cfg.spread_high
        )
        (spread * cfg.spread_weight * cfg.pl_interval).backward()
        metrics["spread"] = spread.item()
    average_grads(G, sync, finite=cfg.fp16_res > 0)
    state.opt_G.step()
    D.requires_grad_(True)

    # --- bookkeeping: images seen, EMA, ADA --------------------------------------------
    state.cur_nimg += n * world_size
    state.step += 1
    beta = ema_beta(n * world_size, state.cur_nimg, cfg.ema_kimg, cfg.ema_rampup)
    ema_update(state.G_ema, G, beta)
    if cfg.ada and state.step % cfg.ada_interval == 0:
        stats = sync(torch.tensor([state.ada_sum, float(state.ada_count)]))
        rt = float(stats[0] / max(stats[1], 1.0))
        p = adjust_p(
            float(aug.p),
            rt,
            target=cfg.ada_target,
            batch_size=n * world_size,
            interval=cfg.ada_interval,
            speed_kimg=cfg.ada_kimg,
        )
        aug.p.fill_(p)
        state.ada_sum, state.ada_count = 0.0, 0
        metrics["ada_rt"] = rt
    metrics["augment_p"] = float(aug.p)
    return metrics
