"""Architecture presets: tiny CPU models (32, 64 px) and a paper-sized 256 px GPU model.

The presets are RGB; ``preset_spec(name, img_channels)`` gives the same architecture for
another number of image channels (1 for grey radiology tiles)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import Any

SHIFT_SOURCES = ("w", "noise")  # what moves G's constant input (NetworkSpec.shift_source)


@dataclass(frozen=True, kw_only=True)
class NetworkSpec:
    """Everything needed to rebuild G and D; saved as JSON beside the weights.

    ``channels`` maps each resolution 4, 8, …, ``resolution`` to its number of feature maps
    (G's block at that resolution, and D's block that reads it). ``input_shift`` > 0 shifts
    G's learned 4×4 constant circularly by a fixed projection of the first w times this many
    cells, so the arrangement of what G draws follows w rather than the pixel grid; 0 is the
    paper's fixed constant. It adds no weights. ``shift_source="noise"`` draws that shift at
    random per sample instead (SD ``input_shift`` cells; zero at constant noise), like the
    per-pixel noise: the arrangement is then stochastic detail and w keeps the tissue's
    state (density, size, stain), which is what the analysis moves along.
    """

    resolution: int
    img_channels: int = 3
    z_dim: int
    w_dim: int
    mapping_layers: int
    channels: dict[int, int] = field(default_factory=dict)
    mbstd_group: int = 4
    mapping_lr_mult: float = 0.01
    input_shift: float = 0.0
    shift_source: str = "w"

    def __post_init__(self) -> None:
        log2 = math.log2(self.resolution)
        if self.resolution < 8 or log2 != int(log2):
            raise ValueError(f"resolution must be a power of two >= 8, got {self.resolution}")
        missing = [r for r in self.resolutions if r not in self.channels]
        if missing:
            raise ValueError(f"channels missing for resolutions {missing}")
        sizes = {
            "img_channels": self.img_channels,
            "z_dim": self.z_dim,
            "w_dim": self.w_dim,
            "mapping_layers": self.mapping_layers,
            "mbstd_group": self.mbstd_group,
            **{f"channels[{r}]": self.channels[r] for r in self.resolutions},
        }
        bad = {k: v for k, v in sizes.items() if int(v) < 1}
        if bad:
            raise ValueError(f"sizes must be >= 1: {bad}")
        if not self.input_shift >= 0:
            raise ValueError(f"input_shift must be >= 0, got {self.input_shift}")
        if self.shift_source not in SHIFT_SOURCES:
            raise ValueError(
                f"shift_source must be one of {SHIFT_SOURCES}, got {self.shift_source!r}"
            )

    def __hash__(self) -> int:  # the dict field is not hashable by itself
        items = tuple((k, v) for k, v in asdict(self).items() if k != "channels")
        return hash((items, tuple(sorted(self.channels.items()))))

    @property
    def resolutions(self) -> list[int]:
        """4, 8, …, resolution."""
        return [2**i for i in range(2, int(math.log2(self.resolution)) + 1)]

    @property
    def num_ws(self) -> int:
        """Number of per-layer w vectors the synthesis network consumes: 2·log2(R) − 2."""
        return 2 * int(math.log2(self.resolution)) - 2

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (channel keys as strings)."""
        d = asdict(self)
        d["channels"] = {str(k): int(v) for k, v in sorted(self.channels.items())}
        if not self.input_shift:  # absent = the paper's fixed constant (older exports)
            del d["input_shift"]
        if not self.input_shift or self.shift_source == "w":  # absent = older exports
            del d["shift_source"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetworkSpec:
        """Inverse of ``to_dict`` (also accepts int channel keys)."""
        d = dict(d)
        d["channels"] = {int(k): int(v) for k, v in d["channels"].items()}
        return cls(**d)


PRESETS: dict[str, NetworkSpec] = {
    # CPU: G 0.8 M, D 0.9 M parameters.
    "tiny32": NetworkSpec(
        resolution=32,
        z_dim=128,
        w_dim=128,
        mapping_layers=4,
        channels={4: 128, 8: 128, 16: 64, 32: 32},
    ),
    # CPU, fast: G 0.19 M, D 0.22 M parameters (1 channel); the radiology known-answer cohort.
    "mini32": NetworkSpec(
        resolution=32,
        z_dim=64,
        w_dim=64,
        mapping_layers=2,
        channels={4: 64, 8: 64, 16: 32, 32: 16},
    ),
    # CPU: G 1.4 M, D 0.9 M parameters.
    "tiny64": NetworkSpec(
        resolution=64,
        z_dim=256,
        w_dim=256,
        mapping_layers=8,
        channels={4: 128, 8: 128, 16: 64, 32: 32, 64: 16},
    ),
    # CPU, twice tiny64's width at nuclear scale (32, 64 px): G 1.5 M, D 0.95 M; ~2x slower.
    "small64": NetworkSpec(
        resolution=64,
        z_dim=256,
        w_dim=256,
        mapping_layers=8,
        channels={4: 128, 8: 128, 16: 64, 32: 64, 64: 32},
    ),
    # CPU, twice tiny64's width from 16 px on (where the nuclei are drawn): ~3x slower.
    "wide64": NetworkSpec(
        resolution=64,
        z_dim=256,
        w_dim=256,
        mapping_layers=8,
        channels={4: 128, 8: 128, 16: 128, 32: 64, 64: 32},
    ),
    # GPU: stylegan2-ada's paper256 (channel base 16 k, max 512; config F's is 32 k).
    "paper256": NetworkSpec(
        resolution=256,
        z_dim=512,
        w_dim=512,
        mapping_layers=8,
        channels={4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64},
    ),
}

# Mixed precision on GPUs (``gan.fp16_res``'s default): the preset's blocks at this resolution
# and finer compute in float16, as stylegan2-ada's four finest resolutions; CPU presets: off.
FP16_RES: dict[str, int] = {"paper256": 32}


def preset_spec(name: str, img_channels: int = 3) -> NetworkSpec:
    """The preset's architecture for ``img_channels`` image channels (G's output, D's input)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], img_channels=int(img_channels))
