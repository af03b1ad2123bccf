"""Typed configuration: YAML + ``--set dotted.key=value`` overrides → validated ``Config``.

Relative paths (``cohort``, ``workdir``) are resolved against the current directory.
Unknown keys and wrong types are errors that name the offending key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TissueConfig(_Section):
    """Tissue detection on a low-resolution copy of the slide (Otsu on HSV saturation)."""

    mask_mpp: float = Field(8.0, gt=0, description="µm/px of the image the mask is computed on")
    sat_min: float = Field(0.05, ge=0, le=1, description="lower clamp of the Otsu threshold")
    sat_max: float = Field(0.20, ge=0, le=1, description="upper clamp of the Otsu threshold")
    min_object_um2: float = Field(5000.0, ge=0, description="drop tissue specks smaller than this")
    min_hole_um2: float = Field(5000.0, ge=0, description="fill holes smaller than this")
    closing_um: float = Field(16.0, ge=0, description="radius of the morphological closing")

    @model_validator(mode="after")
    def _ordered(self) -> TissueConfig:
        if self.sat_min > self.sat_max:
            raise ValueError("sat_min must be <= sat_max")
        return self


class TilingConfig(_Section):
    """Tile grid at a physical resolution."""

    mpp: float = Field(0.5, gt=0, description="target µm per pixel of the tiles")
    size: int = Field(256, ge=8, le=4096, description="tile side in pixels at `mpp`")
    stride: int | None = Field(
        None, ge=1, description="grid step in pixels at `mpp` (default: size)"
    )
    min_tissue: float = Field(0.5, ge=0, le=1, description="minimum tissue fraction of a tile")
    default_mpp: float | None = Field(
        None, gt=0, description="level-0 µm/px for slides with no MPP from file or cohort"
    )
    tissue: TissueConfig = TissueConfig()

    @property
    def step(self) -> int:
        return self.stride or self.size


class StorageConfig(_Section):
    """Zarr layout of the tile arrays."""

    tiles_per_chunk: int = Field(1, ge=1, description="tiles in one zarr chunk")
    tiles_per_shard: int = Field(64, ge=1, description="tiles in one shard (multiple of chunk)")
    codec: Literal["lz4", "zstd", "none"] = Field(
        "lz4", description="lz4 (Blosc): fastest writes; zstd: ~20 % smaller, ~2x slower"
    )
    clevel: int = Field(5, ge=1, le=22, description="compression level of the codec")

    @model_validator(mode="after")
    def _divisible(self) -> StorageConfig:
        if self.tiles_per_shard % self.tiles_per_chunk:
            raise ValueError("tiles_per_shard must be a multiple of tiles_per_chunk")
        return self


class RayConfig(_Section):
    """How to reach Ray and how much each task asks for."""

    address: str | None = Field(None, description="None or 'local': embedded Ray; 'auto' or ray://")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the embedded local Ray")
    temp_dir: str | None = Field(None, description="Ray session folder (short path)")
    tile_task_cpus: float = Field(1.0, gt=0)
    tiles_per_task: int = Field(1024, ge=1, description="split slides into tasks of ~this many")
    max_retries: int = Field(3, ge=0, description="retries of a task after a system failure")


class GanTrainConfig(_Section):
    """StyleGAN2 training (``stylepath train-gan``)."""

    preset: Literal["tiny32", "tiny64", "paper256"] = "tiny64"
    resize_tiles: bool = Field(False, description="resize stored tiles to the preset resolution")
    total_kimg: float = Field(200.0, gt=0, description="train until this many thousand images")
    batch_size: int = Field(32, ge=2, description="total batch over all workers")
    lr_g: float = Field(0.002, gt=0)
    lr_d: float = Field(0.002, gt=0)
    r1_gamma: float = Field(0.2, ge=0)
    r1_interval: int = Field(16, ge=1)
    pl_weight: float = Field(0.0, ge=0, description="path-length regularisation (0: off)")
    style_mixing: float = Field(0.9, ge=0, le=1)
    ema_kimg: float = Field(10.0, gt=0, description="half-life of G_ema")
    ada: bool = Field(True, description="adaptive augmentation (for cohorts of few tiles)")
    ada_target: float = Field(0.6, gt=0, lt=1)
    ada_kimg: float = Field(100.0, gt=0)
    ada_ops: list[
        Literal["xflip", "yflip", "rotate90", "xint", "scale", "rotate", "brightness",
                "contrast", "hue", "saturation"]
    ] = Field(
        ["xflip", "yflip", "rotate90", "xint", "scale", "rotate", "brightness", "contrast",
         "hue", "saturation"],
        description="ADA operations used (the others are never applied)",
    )  # fmt: skip
    dihedral: bool = Field(True, description="random flips and 90° rotations of the tiles")
    seed: int = 0
    tick_kimg: float = Field(4.0, gt=0, description="metrics, checkpoint and guard interval")
    sample_ticks: int = Field(1, ge=1, description="write a sample grid every N ticks")
    metric_ticks: int = Field(5, ge=1, description="compute SWD every N ticks")
    metric_images: int = Field(256, ge=16, description="images per side for SWD")
    guard_d_loss: float = Field(20.0, gt=0, description="roll back when D loss exceeds this")
    guard_diversity: float = Field(
        0.2, ge=0, description="roll back when sample spread < this × the real tiles' spread"
    )
    num_workers: int = Field(1, ge=1, description="Ray Train workers (DDP)")
    use_gpu: bool = False
    cpus_per_worker: int = Field(2, ge=1, description="CPUs (and torch threads) per worker")
    max_failures: int = Field(2, ge=0, description="restarts from the last checkpoint")
    storage_path: str | None = Field(None, description="Ray Train storage (default workdir/gan)")
    init_from: str | None = Field(
        None, description="warm start G (and D) from an exported generator folder, e.g. models/"
    )


class Config(_Section):
    """The whole stylepath configuration."""

    cohort: Path
    workdir: Path
    tiling: TilingConfig = TilingConfig()
    storage: StorageConfig = StorageConfig()
    ray: RayConfig = RayConfig()
    gan: GanTrainConfig = GanTrainConfig()

    def dump(self) -> dict[str, Any]:
        """JSON-safe dict of the resolved config."""
        return self.model_dump(mode="json")

    def section_hash(self, *names: str) -> str:
        """Stable hash of some config sections (used to key cached stage outputs)."""
        data = {n: self.dump()[n] for n in names}
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for i, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{'.'.join(keys[: i + 1])}' is not a section")
        node = child
    node[keys[-1]] = value


def parse_overrides(overrides: list[str] | None) -> list[tuple[str, Any]]:
    """Parse ``key.sub=value`` strings; values are YAML scalars (``1``, ``true``, ``null``)."""
    parsed = []
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected dotted.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from exc
        parsed.append((key.strip(), value))
    return parsed


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        got = err.get("input")
        shown = "" if err["type"] in ("missing", "extra_forbidden") else f" (got {got!r})"
        lines.append(f"  {key}: {msg}{shown}")
    return "\n".join(lines)


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    """Validate a raw dict into a Config; relative paths resolve against the current directory."""
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None
    cfg.cohort = cfg.cohort.expanduser().absolute()
    cfg.workdir = cfg.workdir.expanduser().absolute()
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start empty when ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    source = "<overrides>"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of keys")
        data = loaded
    for key, value in parse_overrides(overrides):
        _set_dotted(data, key, value)
    return config_from_dict(data, source)
