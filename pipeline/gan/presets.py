"""Architecture presets: tiny CPU models (32, 64 px) and a paper-like 256 px GPU model."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class NetworkSpec:
    """Everything needed to rebuild G and D (saved as JSON beside the weights)."""

    resolution: int
    z_dim: int
    w_dim: int
    mapping_layers: int
    channels: dict[int, int] = field(default_factory=dict)  # feature maps per resolution
    img_channels: int = 3
    mbstd_group: int = 4
    mapping_lr_mult: float = 0.01

    def __post_init__(self) -> None:
        log2 = math.log2(self.resolution)
        if self.resolution < 8 or log2 != int(log2):
            raise ValueError(f"resolution must be a power of two >= 8, got {self.resolution}")
        missing = [r for r in self.resolutions if r not in self.channels]
        if missing:
            raise ValueError(f"channels missing for resolutions {missing}")

    @property
    def resolutions(self) -> list[int]:
        """4, 8, …, resolution."""
        return [2**i for i in range(2, int(math.log2(self.resolution)) + 1)]

    @property
    def num_ws(self) -> int:
        """Number of per-layer w vectors the synthesis network consumes."""
        return 2 * int(math.log2(self.resolution)) - 2

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = {str(k): v for k, v in self.channels.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetworkSpec:
        d = dict(d)
        d["channels"] = {int(k): int(v) for k, v in d["channels"].items()}
        return cls(**d)


PRESETS: dict[str, NetworkSpec] = {
    "tiny32": NetworkSpec(
        resolution=32, z_dim=128, w_dim=128, mapping_layers=4,
        channels={4: 128, 8: 128, 16: 64, 32: 32},
    ),
    "tiny64": NetworkSpec(
        resolution=64, z_dim=256, w_dim=256, mapping_layers=8,
        channels={4: 128, 8: 128, 16: 64, 32: 32, 64: 16},
    ),
    "paper256": NetworkSpec(
        resolution=256, z_dim=512, w_dim=512, mapping_layers=8,
        channels={4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64},
    ),
}  # fmt: skip
