"""The trained generator as later stages use it: z → w → image in [0, 1]."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipeline.gan.networks import Generator
from pipeline.gan.presets import NetworkSpec
from pipeline.io.checkpoints import CheckpointError, load_generator_files


class TrainedGenerator:
    """G_ema in eval mode with the statistics of its W space."""

    def __init__(self, G: Generator, meta: dict[str, Any], n_stats: int = 10_000) -> None:
        self.G = G.eval().requires_grad_(False)
        self.meta = meta
        self.spec: NetworkSpec = G.spec
        with torch.no_grad():
            gen = torch.Generator().manual_seed(0)
            w = self.G.mapping(torch.randn(n_stats, G.z_dim, generator=gen))
        self.w_mean = w.mean(0)  # [w_dim]
        self.w_std = w.std(0)  # [w_dim]

    @property
    def z_dim(self) -> int:
        return self.spec.z_dim

    @property
    def w_dim(self) -> int:
        return self.spec.w_dim

    @property
    def num_ws(self) -> int:
        return self.spec.num_ws

    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        """[N, z_dim] → w [N, w_dim]."""
        return self.G.mapping(z, truncation_psi)

    def synthesis(
        self, w: torch.Tensor, noise_mode: str = "const", clamp: bool = True
    ) -> torch.Tensor:
        """w [N, w_dim] or W+ [N, num_ws, w_dim] → images [N, C, H, W] in [0, 1]
        (``clamp=False`` keeps the raw range, e.g. for gradients in projection)."""
        ws = w[:, None].expand(-1, self.num_ws, -1) if w.ndim == 2 else w
        img = (self.G.synthesis(ws, noise_mode) + 1) / 2
        return img.clamp(0, 1) if clamp else img


def load_generator(folder: str | Path) -> TrainedGenerator:
    """Rebuild G_ema from ``generator.json`` + ``generator.safetensors`` in ``folder``."""
    weights, meta = load_generator_files(folder)
    try:
        G = Generator(NetworkSpec.from_dict(meta["spec"]))
        G.load_state_dict(weights)
    except (KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{folder}: weights do not match the architecture ({exc})") from None
    return TrainedGenerator(G, meta)
