"""``stylepath train-gan``: StyleGAN2 on the tile store with Ray Train (DDP over gloo or NCCL),
or with ``--local`` in this process without Ray (one GPU or CPU; Ray is then not imported).

Checkpoints every tick through Ray Train into ``gan.storage_path`` (default ``workdir/gan/ray``;
a URL such as ``s3://bucket/work/gan/ray`` goes through the same fsspec filesystem as the workdir);
re-running the same command resumes from the last checkpoint and stops at the same total
number of images. Outputs under ``workdir/gan/``: ``generator.safetensors`` +
``generator.json`` (G_ema), ``metrics.parquet``, ``samples/kimg*.png``, ``reals.png``,
``resumes.jsonl`` (a line per resume: Ray Train's restart after a lost worker, or a re-run),
``best/`` (the best generator so far by ``snapshot_score``: nuclear bar, then SWD; G_ema or,
with ``gan.score_raw_g``, the raw G when it scores better; with D, for ``export-gan --best``
and ``gan.export: best``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import yaml

from pipeline.config import Config, ConfigError, GanTrainConfig, config_from_dict
from pipeline.gan.data import DataCursor, TileBatches, to_tensor
from pipeline.gan.loop import LoopConfig, generate, train
from pipeline.gan.presets import FP16_RES, PRESETS, NetworkSpec, preset_spec
from pipeline.gan.quality import StatsTracker, best_net
from pipeline.gan.step import StepConfig, Sync, TrainState, no_sync
from pipeline.gan.widen import widen_state_dict, widening_problem
from pipeline.io.checkpoints import (
    STATE_FILE,
    CheckpointError,
    load_generator_files,
    load_state,
    load_weights,
    save_generator,
    save_state,
    save_weights,
)
from pipeline.io.files import (
    atomic_write,
    atomic_write_yaml,
    replace_dir,
    staging_dir,
    temp_sibling,
)
from pipeline.io.images import image_grid, save_png
from pipeline.io.parquet import read_parquet, write_parquet
from pipeline.io.paths import (
    WorkPath,
    as_path,
    is_remote,
    mtime_ns,
    put_file,
    remove_tree,
)
from pipeline.io.tile_store import TileStore
from tasks.train_common import fit_ray_train

log = logging.getLogger("stylepath")
SAMPLE_SEED = 1234  # fixed latents of the sample grids
METRICS_FILE = "metrics.parquet"
RESUMES_FILE = "resumes.jsonl"  # one line per resume: from which checkpoint, when
BEST_DIR = "best"  # the best snapshot so far (snapshot_score), an exported generator folder
# Test hook, "MARKER:NIMG": once (while MARKER does not exist) the last-ranked Ray Train
# worker process exits at its first tick past NIMG images, before reporting that tick.
FAULT_ENV = "STYLEPATH_GAN_FAULT_EXIT_ONCE"


class GanInputError(ValueError):
    """The workdir has no usable tiles for this preset."""


def _from_gan(kind: type, g: GanTrainConfig, **computed: Any) -> Any:
    """The dataclass ``kind`` with every field named as a ``gan`` setting taken from it (one
    place per setting), ``computed`` for the rest; fields ``gan`` lacks keep their defaults."""
    named = {f.name for f in dataclasses.fields(kind)} & set(type(g).model_fields)
    return kind(**({n: getattr(g, n) for n in named} | computed))


def fp16_res(g: GanTrainConfig, device: torch.device | str) -> int:
    """Where mixed precision starts: ``gan.fp16_res``, else the preset's default, on CUDA;
    0 (float32 throughout) on a CPU."""
    if torch.device(device).type != "cuda":
        return 0
    return FP16_RES.get(g.preset, 0) if g.fp16_res is None else g.fp16_res


def step_config(g: GanTrainConfig, world_size: int, device: torch.device | str) -> StepConfig:
    """The training step's settings from ``gan`` for a worker on ``device`` (the batch per
    worker)."""
    return _from_gan(
        StepConfig,
        g,
        batch_size=g.batch_size // world_size,
        fp16_res=fp16_res(g, device),
        spread_low=g.spread_band[0],
        spread_high=g.spread_band[1],
        ada_ops=tuple(g.ada_ops),
    )


def check_inputs(cfg: Config) -> pd.DataFrame:
    """The tile manifest, after checking it can feed this preset (raises ``GanInputError``)."""
    store = TileStore(cfg.workdir / "tiles")
    if not store.tiles_manifest.is_file():
        raise GanInputError(f"{store.tiles_manifest}: no tiles; run `stylepath tile` first")
    manifest = store.read_manifest()
    g = cfg.gan
    if len(manifest) < g.batch_size:
        raise GanInputError(f"{store.tiles_manifest}: {len(manifest)} tiles < one batch")
    size, channels = store.tile_shape(manifest)
    if g.channels is not None and g.channels != channels:
        raise GanInputError(
            f"gan.channels is {g.channels} but the tiles have {channels} "
            "channel(s); leave gan.channels unset to follow the tiles"
        )
    res = PRESETS[g.preset].resolution
    if size != res and not g.resize_tiles:
        raise GanInputError(
            f"tiles are {size} px but preset {g.preset} is {res} px; tile at size {res} "
            "or set gan.resize_tiles=true"
        )
    resolutions = PRESETS[g.preset].resolutions
    for key, allowed in (("checkpoint_res", resolutions), ("fp16_res", resolutions[1:])):
        res = getattr(g, key)
        if res and res not in allowed:
            raise GanInputError(
                f"gan.{key} {res} is not one of preset {g.preset}'s resolutions "
                f"{list(allowed)} (0: off)"
            )
    if g.batch_size % g.num_workers:
        raise GanInputError(f"gan.batch_size {g.batch_size} is not divisible by num_workers")
    return manifest


def _resize(x: torch.Tensor, res: int) -> torch.Tensor:
    if x.shape[-1] == res:
        return x
    return torch.nn.functional.interpolate(
        x, size=(res, res), mode="area" if x.shape[-1] > res else "bilinear"
    )


def _allreduce_mean(world_size: int, device: torch.device) -> Sync:
    def sync(t: torch.Tensor) -> torch.Tensor:
        t = t.to(device, copy=True)  # NCCL reduces CUDA tensors only
        dist.all_reduce(t)
        return t / world_size

    return sync if world_size > 1 else no_sync  # single worker: average_grads skips work


def gan_spec(cfg: Config, channels: int | None = None) -> NetworkSpec:
    """The preset's architecture with ``channels`` image channels (default: ``gan.channels``,
    else the tiles'), and ``gan.input_shift`` / ``gan.shift_source`` / ``gan.mapping_lr_mult``
    when set."""
    g = cfg.gan
    channels = channels or g.channels or TileStore(cfg.workdir / "tiles").tile_shape()[1]
    spec = preset_spec(g.preset, channels)
    if g.input_shift is not None:
        spec = dataclasses.replace(spec, input_shift=g.input_shift)
    if g.mapping_lr_mult is not None:
        spec = dataclasses.replace(spec, mapping_lr_mult=g.mapping_lr_mult)
    return dataclasses.replace(spec, shift_source=g.shift_source)


def state_channels(train_sd: dict[str, Any]) -> int:
    """Image channels of a training checkpoint (D's from_rgb input)."""
    return int(train_sd["D"]["from_rgb.weight"].shape[1])


def warm_start(state: TrainState, folder: WorkPath, preset: str) -> None:
    """G and G_ema (and D when saved) and the augmentation probability from an exported
    generator; optimizers start fresh, images seen from 0. An export with fewer channels at
    some resolutions is widened into the preset, computing the same images
    (``pipeline.gan.widen``); the added channels then learn."""
    weights, meta = load_generator_files(folder)
    try:
        trained = NetworkSpec.from_dict(meta["spec"])
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{folder}: generator.json has no valid spec ({exc})") from None
    # the input shift adds no weights: a generator warm-starts with or without it
    trained = dataclasses.replace(
        trained, input_shift=state.G.spec.input_shift, shift_source=state.G.spec.shift_source
    )
    problem = widening_problem(trained, state.G.spec)
    if problem:
        raise CheckpointError(
            f"{folder}: exported generator cannot start preset {preset} "
            f"({state.G.spec.img_channels} channel(s)): {problem}"
        )
    if trained != state.G.spec:
        log.warning(
            "%s: widening the exported generator's channels %s to preset %s's %s "
            "(same images; the added channels start learning)",
            folder,
            dict(sorted(trained.channels.items())),
            preset,
            dict(sorted(state.G.spec.channels.items())),
        )
    _load_widened(folder / "generator.safetensors", weights, (state.G, state.G_ema), preset)
    d_path = folder / "discriminator.safetensors"
    if d_path.is_file():  # an export without D: D starts fresh
        _load_widened(d_path, load_weights(d_path), (state.D,), preset)
    state.augment.p.fill_(float(meta.get("augment_p", 0.0)))  # D was trained at this p


def _load_widened(
    path: WorkPath, saved: dict[str, torch.Tensor], nets: tuple[torch.nn.Module, ...], preset: str
) -> None:
    """Load saved weights, widened to the nets' shapes, into each of ``nets``."""
    try:
        widened = widen_state_dict(saved, nets[0].state_dict())
        for net in nets:
            net.load_state_dict(widened)
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: does not fit preset {preset} ({exc})") from None


def read_checkpoint(folder: Path) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """A training checkpoint: the saved state and the metrics rows up to it."""
    saved = load_state(folder)
    rows = read_parquet(folder / METRICS_FILE).to_dict(orient="records")
    return saved, rows


@dataclass
class Worker:
    """Where one training process runs: its rank, device and links to the other workers.

    ``report(metrics, folder)`` is called every tick; rank 0 passes the folder holding the
    new checkpoint (valid only during the call), the other ranks ``None``.
    """

    rank: int
    world_size: int
    device: torch.device
    sync: Sync
    report: Callable[[dict[str, float], Path | None], None]
    resume: tuple[dict[str, Any], list[dict[str, float]]] | None = None
    fault: str | None = None  # FAULT_ENV's value (Ray Train only)


def _maybe_die(fault: str | None, rank: int, world: int, nimg: int) -> None:
    """The test hook of ``FAULT_ENV``: a real worker process death, once."""
    if not fault or rank != world - 1:
        return
    marker, _, after = fault.rpartition(":")
    if nimg <= int(after) or os.path.exists(marker):
        return
    Path(marker).touch()
    # Ray Train registers a checkpoint once its controller has polled every worker's report
    # (every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S): wait for that, so the resume point is fixed.
    time.sleep(float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2")) * 2 + 1)
    os._exit(1)


def _set_torch_flags(device: torch.device, cpus: int) -> None:
    """TF32 and cuDNN autotuning on CUDA; ``cpus`` torch threads on a CPU."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(cpus)


def _log_resume(path: WorkPath, nimg: int, ticks: int) -> None:
    """Add a line to ``resumes.jsonl``: where the run resumed, and when."""
    line = {
        "nimg": nimg,
        "ticks": ticks,
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    old = path.read_text() if path.exists() else ""  # rewritten whole: object stores cannot append
    atomic_write(path, lambda tmp: tmp.write_text(old + json.dumps(line) + "\n"))


def _start_state(
    state: TrainState, cfg: Config, out_dir: WorkPath, wk: Worker
) -> tuple[list[dict[str, float]], DataCursor]:
    """Resume ``state`` from ``wk.resume``, else warm-start it from ``gan.init_from`` when set;
    the metrics rows so far and the data cursor to continue from."""
    g = cfg.gan
    if wk.resume is None:
        if g.init_from:
            warm_start(state, as_path(g.init_from, cfg.storage_options), g.preset)
        return [], DataCursor()
    saved, rows = wk.resume
    try:
        state.load_state_dict(saved["train"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint does not match preset {g.preset} ({exc}); use a new "
            "workdir or gan.storage_path to start over"
        ) from None
    cursor = DataCursor(**saved["cursor"])
    rows = list(rows)
    if wk.rank == 0:
        _log_resume(out_dir / RESUMES_FILE, int(state.cur_nimg), len(rows))
    return rows, cursor


def _on_device(batches: TileBatches, device: torch.device, res: int) -> Iterator[torch.Tensor]:
    """The training batches as float tensors on ``device``, at ``res`` px."""
    for x in batches:
        yield _resize(to_tensor(x.to(device)), res)


def _metric_reals(
    cfg: Config, store: TileStore, manifest: pd.DataFrame, res: int, out_dir: WorkPath
) -> tuple[np.ndarray, StatsTracker]:
    """Rank 0's fixed real tiles for the metrics (uint8 [N, res, res, C]) and the bar's
    per-tile statistics of them; writes ``reals.png`` once."""
    g = cfg.gan
    pick = np.random.default_rng(g.seed).choice(len(manifest), g.metric_images, replace=False)
    sub = manifest.iloc[np.sort(pick)]
    imgs = np.concatenate(
        [
            store.read_tiles(str(s), grp["index"].to_numpy())
            for s, grp in sub.groupby("slide_id", sort=False)
        ]
    )
    reals = _resize(torch.from_numpy(imgs).permute(0, 3, 1, 2).float(), res)
    reals = reals.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    if not (out_dir / "reals.png").exists():
        save_png(out_dir / "reals.png", image_grid(reals[:64], 8))
    # the bar's per-tile statistics: histology features for RGB tiles, radiology for grey
    stats = StatsTracker(reals, cfg.tiling.mpp * imgs.shape[1] / res, cfg.analysis.features)
    return reals, stats


def loop_config(g: GanTrainConfig) -> LoopConfig:
    """The training loop's schedule, metrics and guards from ``gan``."""
    return _from_gan(
        LoopConfig, g, total_nimg=int(g.total_kimg * 1000), tick_nimg=int(g.tick_kimg * 1000)
    )


def _tick_callback(
    cfg: Config,
    out_dir: WorkPath,
    wk: Worker,
    batches: TileBatches,
    total_nimg: int,
    rows: list[dict[str, float]],
    stats: StatsTracker | None,
) -> Callable[[TrainState, dict[str, float]], None]:
    """The loop's ``on_tick``: appends the tick's metrics to ``rows``; rank 0 also keeps the
    best snapshot, samples a grid every ``gan.sample_ticks`` and checkpoints; every rank reports."""
    g = cfg.gan
    rank, world = wk.rank, wk.world_size
    tick = {"n": len(rows)}
    need = stats.keys if stats is not None else ()  # rows an older bar measured do not compete
    scores = [found[0] for r in rows if (found := best_net(r, need)) is not None]
    best = {"score": min(scores) if scores else None}

    def on_tick(st: TrainState, metrics: dict[str, float]) -> None:
        _maybe_die(wk.fault, rank, world, st.cur_nimg)
        rows.append(metrics)
        found = best_net(metrics, need)
        if rank == 0 and found is not None and (best["score"] is None or found[0] < best["score"]):
            save_snapshot(out_dir / BEST_DIR, st.state_dict(), cfg, rows, *found)
            best["score"] = found[0]
        with staging_dir() as d:
            folder = None
            if rank == 0:
                if tick["n"] % g.sample_ticks == 0 or st.cur_nimg >= total_nimg:
                    grid = image_grid(generate(st.G_ema, 64, SAMPLE_SEED), 8)
                    save_png(out_dir / "samples" / f"img{st.cur_nimg:09d}.png", grid)
                cursor_now = {"epoch": batches.cursor.epoch, "position": batches.cursor.position}
                save_state(Path(d), {"train": st.state_dict(), "cursor": cursor_now})
                write_parquet(pd.DataFrame(rows), Path(d) / METRICS_FILE)
                folder = Path(d)
            wk.report({k: float(v) for k, v in metrics.items()}, folder)
        tick["n"] += 1

    return on_tick


def train_worker(cfg: Config, out_dir: WorkPath, wk: Worker) -> None:
    """The training run of one worker, Ray or not: build or resume the state, stream the
    tiles, train in ticks, sample grids and checkpoint at every tick."""
    g = cfg.gan
    rank, world = wk.rank, wk.world_size
    _set_torch_flags(wk.device, g.cpus_per_worker)
    spec = gan_spec(cfg)
    scfg = step_config(g, world, wk.device)
    state = TrainState.create(spec, scfg, seed=g.seed, device=wk.device)  # same on every rank
    rows, cursor = _start_state(state, cfg, out_dir, wk)
    store = TileStore(cfg.workdir / "tiles")
    manifest = store.read_manifest()
    batches = TileBatches(
        store,
        manifest,
        scfg.batch_size,
        seed=g.seed,
        rank=rank,
        world_size=world,
        dihedral_aug=g.dihedral,
        cursor=cursor,
    )
    reals, stats = None, None
    if rank == 0:
        reals, stats = _metric_reals(cfg, store, manifest, spec.resolution, out_dir)
    loop_cfg = loop_config(g)
    train(
        state,
        _on_device(batches, wk.device, spec.resolution),
        scfg,
        loop_cfg,
        _tick_callback(cfg, out_dir, wk, batches, loop_cfg.total_nimg, rows, stats),
        reals_for_metrics=reals,
        sync=wk.sync,
        rank=rank,
        world_size=world,
        sample_stats=stats,
    )


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: DDP over the process group Ray Train set up."""
    import ray.train
    import ray.train.torch

    cfg = config_from_dict(config["cfg"])
    ctx = ray.train.get_context()
    world = ctx.get_world_size()
    device = ray.train.torch.get_device() if cfg.gan.use_gpu else torch.device("cpu")
    resume = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            resume = read_checkpoint(Path(d))

    def report(metrics: dict[str, float], folder: Path | None) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(folder) if folder else None
        ray.train.report(metrics, checkpoint=checkpoint)

    wk = Worker(
        rank=ctx.get_world_rank(),
        world_size=world,
        device=device,
        sync=_allreduce_mean(world, device),
        report=report,
        resume=resume,
        fault=config.get("fault"),
    )
    train_worker(cfg, as_path(config["out_dir"], cfg.storage_options), wk)


def generator_meta(train_sd: dict[str, Any], cfg: Config, net: str = "G_ema") -> dict[str, Any]:
    """``generator.json`` of an exported generator: architecture, which network (``G_ema``
    or the raw ``G``), training state and config."""
    if "spec" in train_sd:  # the checkpoint's own architecture, whatever the config says now
        spec = NetworkSpec.from_dict(train_sd["spec"])
    else:  # checkpoints written before the spec was stored
        spec = gan_spec(cfg, state_channels(train_sd))
    return {
        "spec": spec.to_dict(),
        "net": net,
        "preset": cfg.gan.preset,
        "kimg": train_sd["cur_nimg"] / 1000,
        "seed": cfg.gan.seed,
        "augment_p": float(train_sd["augment_p"]),
        "tile_mpp": cfg.tiling.mpp,
        "config": cfg.dump()["gan"],
    }


def save_snapshot(
    folder: WorkPath,
    train_sd: dict[str, Any],
    cfg: Config,
    rows: list[dict[str, float]],
    score: tuple[float, float],
    net: str = "G_ema",
) -> None:
    """G_ema (or the raw G, ``net="G"``) + D + the metrics so far into ``folder`` as an
    exported generator, replacing the previous snapshot in one step (a reader never sees a
    mix of two ticks)."""
    meta = {**generator_meta(train_sd, cfg, net), "snapshot_score": list(score)}
    tmp = temp_sibling(folder)
    save_weights(tmp / "discriminator.safetensors", train_sd["D"])
    write_parquet(pd.DataFrame(rows), tmp / METRICS_FILE)
    save_generator(tmp, train_sd[net], meta)
    replace_dir(tmp, folder)
    log.info(
        "best snapshot so far: %s at %.1f kimg (bar excess %.2f, SWD %.1f)",
        net,
        meta["kimg"],
        *score,
    )


def trained_config(cfg: Config) -> Config:
    """The config the run in ``cfg.workdir`` trained with (its saved ``gan/config.yaml``, from
    its last start), else ``cfg``: an export records how the generator was trained (e.g. the
    run's ``--set gan.…`` overrides), not the export command's config."""
    path = cfg.workdir / "gan" / "config.yaml"
    if not path.is_file():
        return cfg
    try:
        return config_from_dict(yaml.safe_load(path.read_text()), str(path))
    except (ConfigError, yaml.YAMLError) as exc:
        log.warning("%s: not a valid config (%s); recording the export's config", path, exc)
        return cfg


def export_generator(
    checkpoint_dir: WorkPath,
    out_dir: WorkPath,
    cfg: Config,
    *,
    half: bool = False,
    with_discriminator: bool = False,
    net: str = "G_ema",
) -> dict[str, Any]:
    """G_ema (or the raw G, ``net="G"``) weights + architecture + metrics from a checkpoint
    into ``out_dir`` (and D, for warm-starting a later run with ``gan.init_from``)."""
    saved = load_state(checkpoint_dir)
    train_sd = saved["train"]
    meta = generator_meta(train_sd, trained_config(cfg), net)
    save_generator(out_dir, train_sd[net], meta, half=half)
    if with_discriminator:
        save_weights(out_dir / "discriminator.safetensors", train_sd["D"], half=half)
    write_parquet(read_parquet(checkpoint_dir / METRICS_FILE), out_dir / METRICS_FILE)
    return meta


def export_best(
    cfg: Config, out_dir: WorkPath, *, half: bool = False, metrics_from: WorkPath | None = None
) -> dict[str, Any]:
    """The best snapshot (``workdir/gan/best``) as an exported generator in ``out_dir``, with
    the metrics of the whole run when ``metrics_from`` (a checkpoint) is given."""
    best = cfg.workdir / "gan" / BEST_DIR
    if not (best / "generator.json").is_file():
        raise CheckpointError(f"{best}: no best snapshot yet (needs a tick with SWD)")
    weights, meta = load_generator_files(best)
    save_generator(out_dir, weights, meta, half=half)
    d_weights = load_weights(best / "discriminator.safetensors")
    save_weights(out_dir / "discriminator.safetensors", d_weights, half=half)
    rows = read_parquet((metrics_from or best) / METRICS_FILE)
    write_parquet(rows, out_dir / METRICS_FILE)
    return meta


def _storage(cfg: Config) -> WorkPath:
    if cfg.gan.storage_path:
        return as_path(cfg.gan.storage_path, cfg.storage_options)
    return cfg.workdir / "gan" / "ray"


def _checkpoints(cfg: Config) -> list[WorkPath]:
    """Checkpoint folders of this workdir's run (Ray Train's and ``--local``'s), oldest first."""
    root = _storage(cfg)
    found = [
        p
        for sub in ("train", "local")
        for p in (root / sub).glob("checkpoint_*")
        if (p / STATE_FILE).is_file()
    ]
    return sorted(found, key=lambda p: mtime_ns(p / STATE_FILE))


def latest_checkpoint(cfg: Config) -> WorkPath:
    """The newest checkpoint of this workdir's training run."""
    found = _checkpoints(cfg)
    if not found:
        raise CheckpointError(f"{_storage(cfg)}: no checkpoint yet")
    return found[-1]


def _keep_local_checkpoint(folder: Path, root: WorkPath, nimg: int, keep: int | None = 2) -> None:
    """Copy a tick's checkpoint into ``root`` atomically; keep the newest ``keep`` (None: all).

    Object storage: the files are uploaded one by one, ``state.pt`` last — a checkpoint
    counts only once it exists (``_checkpoints``).
    """
    final = root / f"checkpoint_{nimg:012d}"
    if is_remote(root):
        remove_tree(final)
        for f in sorted(folder.iterdir(), key=lambda p: p.name == STATE_FILE):
            put_file(f, final / f.name)
    else:
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".tmp-{final.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(folder, tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    if keep is not None:
        for old in sorted(root.glob("checkpoint_*"), key=str)[:-keep]:
            remove_tree(old)


def _train_local(cfg: Config, out_dir: WorkPath) -> WorkPath:
    """The same worker in this process, without Ray: one CPU, or CUDA with gan.use_gpu."""
    if cfg.gan.use_gpu and not torch.cuda.is_available():
        raise GanInputError("gan.use_gpu is set but this machine has no CUDA device")
    device = torch.device("cuda" if cfg.gan.use_gpu else "cpu")
    root = _storage(cfg) / "local"
    found = _checkpoints(cfg)
    resume = read_checkpoint(found[-1]) if found else None  # a corrupt one raises

    def report(metrics: dict[str, float], folder: Path | None) -> None:
        if folder is not None:
            _keep_local_checkpoint(
                folder, root, int(round(metrics["kimg"] * 1000)), cfg.gan.keep_checkpoints
            )
        shown = (
            "d_loss",
            "g_loss",
            "augment_p",
            "spread_ratio",
            "layout_corr",
            "swd",
            "nuclei_density_z",
            "nuclear_area_mean_z",
            "nuclear_solidity_z",
            "sharpness_z",
            "raw_swd",
            "raw_sharpness_z",
            "layout_excess",
            "raw_layout_excess",
            "sec_per_kimg",
        )
        print(
            f"kimg {metrics['kimg']:.1f} "
            + " ".join(f"{k} {metrics[k]:.4g}" for k in shown if k in metrics),
            file=sys.stderr,
            flush=True,
        )

    wk = Worker(rank=0, world_size=1, device=device, sync=no_sync, report=report, resume=resume)
    train_worker(cfg, out_dir, wk)
    return latest_checkpoint(cfg)


def _train_ray(cfg: Config, out_dir: WorkPath) -> dict[str, Any]:
    """Train on Ray Train workers (DDP), then export the last checkpoint."""
    checkpoint, _ = fit_ray_train(
        train_loop_per_worker,
        {"cfg": cfg.dump(), "out_dir": str(out_dir), "fault": os.environ.get(FAULT_ENV)},
        cfg.gan,
        _storage(cfg),
        cfg.ray,
        num_to_keep=cfg.gan.keep_checkpoints,
    )
    with checkpoint.as_directory() as d:  # also when storage is object storage
        return _export(cfg, Path(d), out_dir)


def _export(cfg: Config, checkpoint_dir: WorkPath, out_dir: WorkPath) -> dict[str, Any]:
    """The run's generator into ``workdir/gan``: the last tick, or with ``gan.export: best``
    the best snapshot (the metrics stay the whole run's)."""
    if cfg.gan.export == "best":
        if (out_dir / BEST_DIR / "generator.json").is_file():
            return export_best(cfg, out_dir, metrics_from=checkpoint_dir)
        log.warning(
            "gan.export is best but no tick measured SWD (gan.metric_ticks): "
            "exporting the last tick"
        )
    return export_generator(checkpoint_dir, out_dir, cfg)


def run_train_gan(cfg: Config, local: bool = False) -> dict[str, Any]:
    """Train (or resume) and export; returns the exported generator's metadata.

    ``local``: train in this process without Ray (a workstation's one GPU, or a CPU), with
    the same checkpoints; it resumes from the newest checkpoint of either mode.
    """
    check_inputs(cfg)
    out_dir = cfg.workdir / "gan"
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_yaml(out_dir / "config.yaml", cfg.dump())
    if local:
        return _export(cfg, _train_local(cfg, out_dir), out_dir)
    return _train_ray(cfg, out_dir)
