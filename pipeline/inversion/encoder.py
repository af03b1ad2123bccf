"""A small convolutional encoder E: image [N, C, R, R] in [0, 1] → w [N, w_dim] (or W+
[N, num_ws, w_dim]). Its output is ``w_mean + w_std ⊙ out`` with the last layer zeroed, so an
untrained encoder returns the generator's mean w."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class EncoderSpec:
    """Architecture of an encoder (stored beside its weights)."""

    resolution: int
    w_dim: int
    num_ws: int
    plus: bool = False  # W+: one w per synthesis layer
    width: int = 32  # channels of the first conv; doubled per level up to 8 × width
    channels: int = 3  # image channels (3 RGB, 1 grey)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["channels"] == 3:  # RGB specs (and cache keys) stay as before channels existed
            d.pop("channels")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderSpec:
        return cls(**d)


class Encoder(nn.Module):
    """Stride-2 3×3 convs (LeakyReLU) from R to 4 px, then two linear layers."""

    def __init__(
        self, spec: EncoderSpec, w_mean: torch.Tensor, w_std: torch.Tensor, seed: int | None = None
    ) -> None:
        """``seed`` fixes the initial weights without touching the global RNG (a rerun of
        the invert stage then trains the same encoder); None draws them from it."""
        super().__init__()
        self.spec = spec
        if seed is None:
            self._build(spec)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self._build(spec)
        self.register_buffer("w_mean", w_mean.detach().clone().float())
        self.register_buffer("w_std", w_std.detach().clone().float())

    def _build(self, spec: EncoderSpec) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(spec.channels, spec.width, 3, padding=1),
            nn.LeakyReLU(0.2),
        ]
        ch, res = spec.width, spec.resolution
        while res > 4:
            nxt = min(ch * 2, spec.width * 8)
            layers += [nn.Conv2d(ch, nxt, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            ch, res = nxt, res // 2
        self.features = nn.Sequential(*layers)
        n_out = spec.w_dim * (spec.num_ws if spec.plus else 1)
        hidden = max(spec.w_dim, 256)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(ch * res * res, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, n_out),
        )
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        out = self.head(self.features(img * 2 - 1))
        if self.spec.plus:
            out = out.view(len(img), self.spec.num_ws, self.spec.w_dim)
            return self.w_mean + self.w_std * out
        return self.w_mean + self.w_std * out


def expand_ws(w: torch.Tensor, num_ws: int) -> torch.Tensor:
    """w [N, w_dim] → [N, num_ws, w_dim]; W+ input passes through."""
    return w[:, None].expand(-1, num_ws, -1) if w.ndim == 2 else w
