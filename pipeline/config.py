"""Typed configuration: YAML + ``--set dotted.key=value`` overrides → validated ``Config``.

Relative paths (``cohort``, ``workdir``) are resolved against the current directory; ``workdir``
may also be an fsspec URL (``s3://bucket/prefix``), opened with ``storage_options``.
Unknown keys and wrong types are errors that name the offending key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.io.paths import as_path, is_remote
from pipeline.probes.families import DEFAULT_STRENGTHS, VALID_RANGES
from pipeline.provenance import content_key


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


# ADA's operations, in the order ``pipeline.gan.augment.AugmentPipe`` applies them.
AdaOp = Literal[
    "xflip",
    "yflip",
    "rotate90",
    "xint",
    "scale",
    "rotate",
    "brightness",
    "contrast",
    "hue",
    "saturation",
]
ADA_OPS: tuple[str, ...] = get_args(AdaOp)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RayTrainSettings(_Section):
    """Ray Train resources and fault tolerance of a training stage (GAN, classifier)."""

    num_workers: int = Field(1, ge=1, description="Ray Train workers (DDP)")
    use_gpu: bool = False
    cpus_per_worker: int = Field(2, ge=1, description="CPUs (and torch threads) per worker")
    max_failures: int = Field(2, ge=0, description="restarts from the last checkpoint")
    storage_path: str | None = Field(
        None, description="Ray Train storage (default: the stage's folder in the workdir)"
    )


class ActorPoolSettings(_Section):
    """The actor pool of a per-part stage (predict, invert, analyze; ``tasks/pool.py``)."""

    concurrency: int = Field(2, ge=1, description="actors (each loads its models once)")
    num_cpus: float = Field(1.0, gt=0, description="CPUs (torch threads) per actor")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per actor (0: CPU)")
    max_restarts: int = Field(3, ge=0, description="fresh actors replacing dead ones, per round")
    max_task_retries: int = Field(
        3, ge=0, description="retries of a job whose actor died; then it is given up"
    )
    task_timeout_s: float = Field(
        900.0, gt=0, description="no job finishing for this long → new round, or error (stuck)"
    )


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


class RadiologyConfig(_Section):
    """Radiology images (``modality: radiology``): one image → one tile of ``tiling.size`` px."""

    frame: int = Field(
        0, ge=0, description="frame of multi-frame files (a cohort column `frame` overrides it)"
    )
    window: Literal["auto", "file", "percentile", "minmax", "fixed"] = Field(
        "auto",
        description="auto: the file's VOI LUT or window, else percentiles (8-bit PNG/JPEG as "
        "stored); file: require the file's; percentile/minmax/fixed: ignore the file's",
    )
    voi_index: int = Field(0, ge=0, description="which of several windows / VOI LUTs to use")
    percentiles: tuple[float, float] = Field(
        (0.5, 99.5), description="low/high percentiles mapped to 0 and 1 without a file window"
    )
    window_center: float | None = Field(None, description="window: fixed (modality units)")
    window_width: float | None = Field(None, gt=0, description="window: fixed (modality units)")
    pad_value: float = Field(0.0, ge=0, le=1, description="grey level of the padding")
    images_per_task: int = Field(16, ge=1, description="images read by one Ray task")

    @model_validator(mode="after")
    def _window(self) -> RadiologyConfig:
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError("percentiles must satisfy 0 <= low < high <= 100")
        if self.window == "fixed" and (self.window_center is None or self.window_width is None):
            raise ValueError("window: fixed needs window_center and window_width")
        return self


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


class GanTrainConfig(RayTrainSettings):
    """StyleGAN2 training (``stylepath train-gan``)."""

    preset: Literal["mini32", "tiny32", "tiny64", "small64", "wide64", "paper256"] = "tiny64"
    channels: int | None = Field(
        None, ge=1, le=4, description="image channels of G and D (default: the tiles', 3 or 1)"
    )
    resize_tiles: bool = Field(False, description="resize stored tiles to the preset resolution")
    total_kimg: float = Field(200.0, gt=0, description="train until this many thousand images")
    batch_size: int = Field(32, ge=2, description="total batch over all workers")
    lr_g: float = Field(0.002, gt=0)
    lr_d: float = Field(0.002, gt=0)
    r1_gamma: float = Field(0.2, ge=0)
    r1_interval: int = Field(16, ge=1)
    pl_weight: float = Field(0.0, ge=0, description="path-length regularisation (0: off)")
    spread_weight: float = Field(
        0.0,
        ge=0,
        description="penalty, lazy like path length, when the samples of one shared noise "
        "draw spread a tile statistic (soft nuclear fraction, mean R, G, B as shown) less "
        "or more than the real batch (SD ratio outside gan.spread_band): w, not the noise "
        "or input shift, must carry the tiles' content (0: off)",
    )
    spread_band: tuple[float, float] = Field(
        (0.7, 1.3), description="the SD ratio (samples / reals) the spread penalty allows"
    )
    style_mixing: float = Field(0.9, ge=0, le=1)
    ema_kimg: float = Field(10.0, gt=0, description="half-life of G_ema")
    score_raw_g: bool = Field(
        True,
        description="at SWD ticks also measure the raw G; the best snapshot keeps whichever "
        "of G and G_ema is closer to the bar (short runs: G_ema can be the softer)",
    )
    ada: bool = Field(True, description="adaptive augmentation (for cohorts of few tiles)")
    ada_target: float = Field(0.6, gt=0, lt=1)
    ada_kimg: float = Field(100.0, gt=0)
    ada_ops: list[AdaOp] = Field(
        list(ADA_OPS),
        description="ADA operations used (the others are never applied)",
    )
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
    keep_checkpoints: int | None = Field(
        2,
        ge=1,
        description="tick checkpoints kept (the newest; None keeps every tick, to choose or "
        "export a snapshot after the run with export-gan --checkpoint)",
    )
    input_shift: float | None = Field(
        None,
        ge=0,
        description="shift G's constant input by w (cells; see NetworkSpec), so the layout "
        "cannot stick to the pixel grid; None keeps the preset's (0: the paper's)",
    )
    mapping_lr_mult: float | None = Field(
        None,
        gt=0,
        description="learning-rate multiplier of the mapping network z → w; None keeps the "
        "preset's (0.01, the paper's, set for 25 000 kimg runs: in a few hundred kimg the "
        "mapping barely moves from its random start)",
    )
    shift_source: Literal["w", "noise"] = Field(
        "w",
        description="what sets that shift: w (the layout follows w), or noise (drawn per "
        "sample like the noise inputs; the layout is stochastic detail and w keeps the "
        "tissue's state)",
    )
    init_from: str | None = Field(
        None,
        description="warm start G (and D) from an exported generator folder, e.g. models/; "
        "an export with fewer channels at some resolutions (not the coarsest) is widened into "
        "the preset, computing the same images, and the added channels learn from there",
    )
    checkpoint_res: int = Field(
        0,
        ge=0,
        description="activation checkpointing: G and D blocks at this resolution and finer "
        "recompute their activations in the backward pass instead of keeping them (less "
        "memory per image, one more forward of those blocks; 0: off). Measured: "
        "docs/cluster.md",
    )
    fp16_res: int | None = Field(
        None,
        ge=0,
        description="mixed precision on GPUs: G and D blocks at this resolution and finer "
        "compute in float16, every layer's output clamped to ±256 (stylegan2-ada's); None: "
        "the preset's (paper256: 32, its four finest resolutions; the CPU presets: off); 0: "
        "off. Training on CPUs is float32 whatever this says. Measured: docs/cluster.md",
    )
    export: Literal["last", "best"] = Field(
        "last",
        description="generator written to workdir/gan at the end: the last tick, or the best "
        "snapshot (nuclear bar, then SWD; workdir/gan/best)",
    )

    @field_validator("spread_band")
    @classmethod
    def _band(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= 1 <= v[1]:
            raise ValueError(f"spread_band must be (low, high) with 0 < low <= 1 <= high, got {v}")
        return v


class ClassifierTrainConfig(RayTrainSettings):
    """The built-in tile classifier (``stylepath train-classifier``)."""

    label_column: str = Field("label", description="tile manifest column with the class")
    epochs: int = Field(6, ge=1)
    batch_size: int = Field(64, ge=2, description="total batch over all workers")
    lr: float = Field(0.002, gt=0, description="Adam learning rate (cosine decay to 5 %)")
    weight_decay: float = Field(1e-4, ge=0)
    channels: list[int] = Field([16, 32, 64, 64], min_length=1, description="conv widths")
    val_fraction: float = Field(0.25, gt=0, lt=1, description="share of slides/patients held out")
    group_by: Literal["auto", "slide_id", "patient"] = Field(
        "auto", description="split unit; auto: patient when the column exists, else slide"
    )
    dihedral: bool = Field(True, description="random flips and 90° rotations")
    stain_jitter: float = Field(
        0.0, ge=0, le=0.5, description="HED stain augmentation σ (docs/classifier.md); 0: off"
    )
    seed: int = 0


class PredictConfig(ActorPoolSettings):
    """Scoring every tile (``stylepath predict``) with a Ray actor pool."""

    batch_size: int = Field(256, ge=1, description="tiles per forward pass")
    tiles_per_task: int = Field(1024, ge=1, description="tiles of one slide per actor call")
    heatmaps: Literal["auto", "gradcam", "occlusion", "both", "none"] = Field(
        "auto", description="auto: GradCAM for nn.Module models, occlusion for TorchScript"
    )
    heatmap_grid: int = Field(8, ge=1, le=256, description="stored heatmap side (float16)")
    gradcam_layer: str | None = Field(
        None, description="module name of the GradCAM layer (default: the last Conv2d)"
    )
    occlusion_patch: int = Field(16, ge=1, description="occluded square, px at model input")
    occlusion_stride: int = Field(16, ge=1, description="occlusion step, px at model input")


class ClassifierConfig(_Section):
    """The classifier to explain: a TorchScript file or a ``module:callable`` + safetensors.

    With neither set, the built-in classifier exported by ``train-classifier`` is used.
    Unset ``input_size``/``mean``/``std``/``class_names``/``explain`` come from the model's
    JSON card (``model.pt`` → ``model.json``) when it has one.
    """

    model: str | None = Field(None, description="TorchScript file (torch.jit.save)")
    entry_point: str | None = Field(None, description="module:callable returning an nn.Module")
    weights: str | None = Field(None, description="safetensors state dict for entry_point")
    entry_kwargs: dict[str, Any] = Field({}, description="keyword arguments of entry_point")
    input_size: int | None = Field(None, ge=1, le=4096, description="tiles are resized to it")
    channels: int | None = Field(
        None, ge=1, le=4, description="input channels of the model (default: card, else tiles)"
    )
    mean: list[float] | None = Field(None, description="per-channel mean on [0, 1] (RGB or grey)")
    std: list[float] | None = Field(None, description="per-channel std on [0, 1] (RGB or grey)")
    normalize: bool = Field(True, description="false: feed [0, 1] RGB even if the card has mean")
    class_names: list[str] | None = Field(None, description="names of the outputs")
    explain: str | int | None = Field(None, description="class name or output index to explain")
    train: ClassifierTrainConfig = ClassifierTrainConfig()
    predict: PredictConfig = PredictConfig()

    @model_validator(mode="after")
    def _consistent(self) -> ClassifierConfig:
        if self.model and self.entry_point:
            raise ValueError("set model (TorchScript) or entry_point, not both")
        if self.entry_point and ":" not in self.entry_point:
            raise ValueError("entry_point must look like package.module:callable")
        if self.entry_point and not self.weights:
            raise ValueError("entry_point needs weights (a safetensors file)")
        if (self.mean is None) != (self.std is None):
            raise ValueError("set both mean and std, or neither")
        n = self.channels
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is not None and len(v) not in ((n,) if n else (1, 3)):
                want = f"{n} value(s)" if n else "3 values (R, G, B) or 1 (grey)"
                raise ValueError(f"{name} must have {want}, one per input channel")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError("mean and std must have the same length")
        if self.std is not None and min(self.std) <= 0:
            raise ValueError("std must be > 0")
        return self


class FidelityConfig(_Section):
    """The fidelity gate: which inverted tiles the analysis may explain (docs/reports.md)."""

    max_prob_change: float = Field(
        0.1, ge=0, le=1, description="largest |p(tile) − p(reconstruction)| of the classifier"
    )
    min_ssim: float = Field(0.0, ge=-1, le=1, description="smallest SSIM to the tile")
    identity_quantile: float | None = Field(
        0.95,
        gt=0,
        lt=1,
        description="the reconstruction must be more like its tile (SSIM) than this quantile "
        "of its SSIM to reference tiles of other slides (None: not tested)",
    )
    reference_tiles: int = Field(64, ge=1, description="reference tiles for that test")


def _probe_field(family: str, description: str) -> Any:
    return Field(default_factory=lambda: list(DEFAULT_STRENGTHS[family]), description=description)


class ProbesConfig(_Section):
    """Generator-free probes: strengths of each perturbation family ([] leaves it out;
    docs/reports.md, "Probes")."""

    enabled: bool = Field(True, description="score the selected tiles under the probes")
    hematoxylin: list[float] = _probe_field("hematoxylin", "factors on the H concentration")
    eosin: list[float] = _probe_field("eosin", "factors on the E concentration")
    blur: list[float] = _probe_field("blur", "Gaussian σ in µm")
    jpeg: list[float] = _probe_field("jpeg", "JPEG qualities")
    brightness: list[float] = _probe_field("brightness", "added brightness, [0, 1] units")
    contrast: list[float] = _probe_field("contrast", "factors on deviations from the mean")
    gamma: list[float] = _probe_field("gamma", "exponents on [0, 1] values")
    noise: list[float] = _probe_field("noise", "Gaussian noise SD in grey levels")
    window_level: list[float] = _probe_field("window_level", "radiology: window centre shift")
    window_width: list[float] = _probe_field("window_width", "radiology: window width factor")
    stain_normalise: bool = Field(
        True, description="normalise each tile to every other group's stain (histology)"
    )

    @field_validator(*DEFAULT_STRENGTHS)
    @classmethod
    def _in_range(cls, v: list[float], info: Any) -> list[float]:
        lo, hi = VALID_RANGES[info.field_name]
        bad = [x for x in v if not lo <= x <= hi]
        if bad:
            raise ValueError(f"strengths {bad} outside the valid range [{lo}, {hi}]")
        return v

    def strengths(self) -> dict[str, list[float]]:
        """Family → strengths, for the families configured with any."""
        return {f: list(getattr(self, f)) for f in DEFAULT_STRENGTHS if getattr(self, f)}


class AnalysisConfig(ActorPoolSettings):
    """Directions, latent shifts and feature effects (``stylepath analyze``)."""

    n_samples: int = Field(4000, ge=100, description="synthesised latents for the direction fit")
    fit: Literal["logistic", "regression"] = Field(
        "logistic", description="logistic on the predicted class, or ridge on the logit"
    )
    metadata: list[str] = Field(["center"], description="cohort columns for metadata directions")
    n_pcs: int = Field(0, ge=0, description="principal directions of W to add (0: none)")
    conditional: bool = Field(True, description="add classifier directions with metadata removed")
    alphas: list[float] = Field(
        [-2.0, -1.0, 0.0, 1.0, 2.0],
        min_length=2,
        description="shift grid, in SDs of W along the direction",
    )
    tiles_per_slide: int = Field(16, ge=1, description="inverted tiles shifted per slide")
    features: list[str] | None = Field(None, description="feature names (default: all)")
    random_directions: int = Field(
        16,
        ge=2,
        description="random directions from W's covariance shifted on the same tiles: the "
        "null a feature's effect must beat to be specific",
    )
    fdr: float = Field(0.05, gt=0, lt=1, description="false discovery rate of `specific`")
    n_permutations: int = Field(
        200, ge=20, description="slide-level shuffles of the metadata: the cosines' null"
    )
    fidelity: FidelityConfig = FidelityConfig()
    probes: ProbesConfig = ProbesConfig()
    n_boot: int = Field(2000, ge=100, description="bootstrap resamples of slides")
    min_slides: int = Field(2, ge=1, description="slides a group needs to be estimable")
    seed: int = 0
    batch_size: int = Field(32, ge=1, description="tiles per actor call")

    @model_validator(mode="after")
    def _alphas(self) -> AnalysisConfig:
        if len(set(self.alphas)) < 2:
            raise ValueError("alphas needs at least two distinct values")
        return self


class EncoderTrainConfig(_Section):
    """The encoder image → w, trained once per generator on its own samples."""

    steps: int = Field(600, ge=0, description="Adam steps (0: the mean w, untrained)")
    batch: int = Field(32, ge=2, description="generator samples per step")
    lr: float = Field(0.001, gt=0)
    width: int = Field(32, ge=4, description="channels of the first conv (doubling, ≤ 8×)")
    latent_weight: float = Field(1.0, ge=0, description="‖(E(x) − w) / w_std‖²")
    pixel_weight: float = Field(1.0, ge=0, description="MSE of G(E(x)) against x")
    ssim_weight: float = Field(0.5, ge=0, description="multi-scale 1 − SSIM of G(E(x))")
    truncation_mix: float = Field(0.5, ge=0, le=1, description="share of samples with ψ<1")
    seed: int = 0
    retrain: bool = Field(False, description="train again even if a cached encoder fits")
    num_cpus: float = Field(2.0, gt=0, description="CPUs (torch threads) of the training task")
    num_gpus: float = Field(0.0, ge=0, description="GPUs of the training task")


class RefineConfig(_Section):
    """Batched refinement of the encoder's latents (Adam over a batch of independent w)."""

    steps: int = Field(20, ge=0, description="Adam steps per batch (0: encoder only)")
    lr: float = Field(0.05, gt=0, description="peak learning rate")
    noise: float = Field(0.05, ge=0, description="initial latent noise × w_std, decays to 0")
    noise_ramp: float = Field(0.75, gt=0, le=1, description="share of steps the noise lasts")
    lr_rampup: float = Field(0.05, gt=0, le=1)
    lr_rampdown: float = Field(0.25, gt=0, le=1)
    pixel_weight: float = Field(1.0, ge=0, description="pixel MSE")
    ssim_weight: float = Field(1.0, ge=0, description="multi-scale 1 − SSIM")
    feature_weight: float = Field(0.1, ge=0, description="discriminator-feature loss (0: off)")
    stats_weight: float = Field(
        0.0, ge=0, description="tile statistics (nuclear fraction, size, colour) kept (0: off)"
    )
    stats_open_px: int = Field(
        7, ge=1, description="nuclei at least this wide (px) count as large in the statistics"
    )
    ssim_scales: int = Field(3, ge=1, le=5)


class SelectionConfig(_Section):
    """Which tiles to invert."""

    mode: Literal["all", "per_slide", "top_confident"] = Field(
        "all", description="all tiles; n random per slide; k most confident per slide and class"
    )
    n: int | None = Field(None, ge=1, description="tiles per slide (per_slide)")
    k: int | None = Field(None, ge=1, description="tiles per slide and class (top_confident)")
    seed: int = 0

    @model_validator(mode="after")
    def _needs(self) -> SelectionConfig:
        if self.mode == "per_slide" and self.n is None:
            raise ValueError("selection.mode per_slide needs selection.n")
        if self.mode == "top_confident" and self.k is None:
            raise ValueError("selection.mode top_confident needs selection.k")
        return self


class InversionConfig(ActorPoolSettings):
    """``stylepath invert``: tiles → latents with an encoder + batched refinement."""

    generator: str | None = Field(
        None, description="exported generator folder (default: workdir/gan)"
    )
    discriminator: bool = Field(True, description="use D's features when the folder has D")
    space: Literal["W", "W+"] = "W"
    resize_tiles: bool = Field(False, description="resize tiles to the generator resolution")
    encoder: EncoderTrainConfig = EncoderTrainConfig()
    refine: RefineConfig = RefineConfig()
    selection: SelectionConfig = SelectionConfig()
    seed: int = 0
    replicates: int = Field(
        1,
        ge=1,
        le=10,
        description="inversions of the selection, each seeded one further (encoder and "
        "refinement; inversion/replicate-<r>): the analysis' CIs cover what they change",
    )
    batch_size: int = Field(64, ge=1, description="tiles of one slide per actor call and Adam")


def _work_path(value: Any) -> Any:
    if not isinstance(value, str | os.PathLike) or not str(value).strip():
        raise ValueError("must be a folder path or a URL such as s3://bucket/prefix")
    try:
        return as_path(value)
    except (ValueError, ImportError) as exc:  # unknown protocol, its package missing
        raise ValueError(f"cannot open {value!s}: {exc}") from None


WorkPathField = Annotated[Any, BeforeValidator(_work_path), PlainSerializer(str, return_type=str)]


class Config(_Section):
    """The whole stylepath configuration."""

    cohort: Path
    workdir: WorkPathField = Field(
        description="output folder: a local or shared-filesystem path, or an fsspec URL "
        "(s3://bucket/prefix; see docs/cluster.md)"
    )
    storage_options: dict[str, Any] = Field(
        {},
        description="fsspec options for a URL workdir and storage paths (e.g. endpoint_url, "
        "profile); credentials are better left to the environment",
    )
    modality: Literal["histology", "radiology"] = Field(
        "histology",
        description="histology: whole-slide images tiled on a grid (RGB); radiology: each "
        "DICOM/PNG/JPEG image becomes one grey tile (1 channel)",
    )
    tiling: TilingConfig = TilingConfig()
    radiology: RadiologyConfig = RadiologyConfig()
    storage: StorageConfig = StorageConfig()
    ray: RayConfig = RayConfig()
    gan: GanTrainConfig = GanTrainConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    inversion: InversionConfig = InversionConfig()

    @model_validator(mode="after")
    def _workdir_options(self) -> Config:
        wd = self.workdir
        if is_remote(wd) and self.storage_options:
            wanted = as_path(str(wd), self.storage_options)
            if dict(wd.storage_options) != dict(wanted.storage_options):
                object.__setattr__(self, "workdir", wanted)
        return self

    def dump(self) -> dict[str, Any]:
        """JSON-safe dict of the resolved config."""
        return self.model_dump(mode="json")

    def section_hash(self, *names: str) -> str:
        """Stable hash of some config sections (used to key cached stage outputs)."""
        return content_key({n: self.dump()[n] for n in names}, size=16)


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
    if not is_remote(cfg.workdir):
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
