"""Training the encoder on generator samples: pairs (G(w), w) with w = mapping(z), a latent
loss ‖(E(x) − w) / w_std‖² and an image loss (MSE + multi-scale SSIM) between G(E(x)) and x."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from pipeline.gan.generator import TrainedGenerator
from pipeline.inversion.encoder import Encoder, expand_ws
from pipeline.inversion.losses import as_displayed, ms_ssim_loss, mse


@dataclass(frozen=True)
class EncoderLoss:
    latent: float = 1.0
    pixel: float = 1.0
    ssim: float = 0.5
    truncation_mix: float = 0.5  # share of samples drawn with ψ ~ U(0.5, 1) (nearer the mean)


def sample_pairs(
    gen: TrainedGenerator, n: int, mix: float, rng: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """n generator samples and their w: images [n, 3, R, R] in [0, 1], w [n, w_dim]."""
    dev = gen.w_mean.device
    z = torch.randn(n, gen.z_dim, generator=rng).to(dev)
    psi = torch.where(
        torch.rand(n, generator=rng) < mix, 0.5 + 0.5 * torch.rand(n, generator=rng), torch.ones(n)
    ).to(dev)
    with torch.no_grad():
        w = gen.mapping(z)
        w = gen.w_mean + psi[:, None] * (w - gen.w_mean)
        x = gen.synthesis(w)
    return x, w


def encoder_step(
    gen: TrainedGenerator,
    E: Encoder,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    w: torch.Tensor,
    loss: EncoderLoss,
) -> dict[str, float]:
    """One Adam step on a batch of (image, w) pairs; returns the loss terms."""
    pred = E(x)
    target = expand_ws(w, E.spec.num_ws) if E.spec.plus else w
    lat = ((pred - target) / E.w_std).square().flatten(1).mean(1).mean()
    total = loss.latent * lat
    out = {"latent": float(lat.detach())}
    if loss.pixel > 0 or loss.ssim > 0:
        recon = as_displayed(gen.synthesis(pred, clamp=False))
        pix = mse(recon, x).mean()
        ss = ms_ssim_loss(recon, x).mean()
        total = total + loss.pixel * pix + loss.ssim * ss
        out.update(pixel=float(pix.detach()), ssim_loss=float(ss.detach()))
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    out["loss"] = float(total.detach())
    return out


def train_encoder(
    gen: TrainedGenerator,
    E: Encoder,
    steps: int,
    batch: int,
    lr: float,
    seed: int = 0,
    loss: EncoderLoss | None = None,
    log_every: int = 0,
) -> list[dict[str, float]]:
    """Train ``E`` in place (Adam, cosine decay to 10 %); returns the per-step history."""
    loss = loss or EncoderLoss()
    rng = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(E.parameters(), lr=lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * s / steps))).item()
    )
    E.train()
    history = []
    t0 = time.perf_counter()
    for step in range(steps):
        x, w = sample_pairs(gen, batch, loss.truncation_mix, rng)
        rec = encoder_step(gen, E, opt, x, w, loss)
        sched.step()
        rec["step"] = step
        rec["seconds"] = time.perf_counter() - t0
        history.append(rec)
        if log_every and (step + 1) % log_every == 0:
            print(
                f"encoder step {step + 1}/{steps}: "
                + ", ".join(f"{k} {v:.4f}" for k, v in rec.items() if k not in ("step",)),
                flush=True,
            )
    E.eval()
    return history
