"""``stylepath train-classifier``: the built-in tile CNN on the tiles' labels, with Ray Train.

Split by patient (or slide): no group is in both train and validation. Checkpoints every epoch
through Ray Train into ``classifier.train.storage_path`` (default ``workdir/classifier/ray``);
re-running the same command resumes. Outputs under ``workdir/classifier/``: ``metrics.parquet``
(one row per epoch), ``model.pt`` (TorchScript, the classifier contract) + ``model.json``
(its card) and ``model.safetensors`` (the same weights for ``pipeline.classifier.model:tile_cnn``,
so GradCAM can see inside), ``split.parquet`` (which slides were held out).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
import ray.train
import torch
import torch.distributed as dist
from ray.train.torch import prepare_model

from pipeline.classifier.contract import (
    BUILTIN_CARD,
    BUILTIN_DIR,
    ClassifierError,
    load_classifier,
    resolve_spec,
    tiles_to_tensor,
)
from pipeline.classifier.model import TileCNN
from pipeline.classifier.train import (
    TrainInputError,
    channel_stats,
    class_names_of,
    epoch_batches,
    evaluate,
    group_column,
    predict_logits,
    split_by_group,
    train_epoch,
)
from pipeline.config import ClassifierConfig, ClassifierTrainConfig, Config, config_from_dict
from pipeline.io.checkpoints import CheckpointError, load_state, save_state
from pipeline.io.files import atomic_write_yaml, staging_dir
from pipeline.io.models import load_torchscript, save_torchscript, save_weights, write_card
from pipeline.io.parquet import read_parquet, write_parquet
from pipeline.io.paths import WorkPath, as_path
from pipeline.io.tile_store import TileStore
from tasks.train_common import fit_ray_train

METRICS_FILE = "metrics.parquet"
ENTRY_POINT = "pipeline.classifier.model:tile_cnn"


def check_inputs(cfg: Config) -> tuple[pd.DataFrame, list[str], np.ndarray]:
    """The labelled tile manifest, the class names and the validation mask (raises
    ``TrainInputError`` before any work)."""
    t = cfg.classifier.train
    store = TileStore(cfg.workdir / "tiles")
    if not store.tiles_manifest.is_file():
        raise TrainInputError(f"{store.tiles_manifest}: no tiles; run `stylepath tile` first")
    manifest = store.read_manifest()
    if t.label_column not in manifest.columns:
        raise TrainInputError(
            f"{store.tiles_manifest}: no column {t.label_column!r} (give the cohort a label)"
        )
    try:
        names = class_names_of(manifest[t.label_column])
        val = split_by_group(manifest, t.label_column, t.val_fraction, t.seed, t.group_by)
    except TrainInputError as exc:
        raise TrainInputError(f"{store.tiles_manifest}: {exc}") from None
    if (~val).sum() < t.batch_size:
        raise TrainInputError(f"{(~val).sum()} training tiles < one batch ({t.batch_size})")
    if t.batch_size % t.num_workers:
        raise TrainInputError(
            f"classifier.train.batch_size {t.batch_size} is not divisible "
            f"by num_workers {t.num_workers}"
        )
    return manifest, names, val


def _read_all(store: TileStore, manifest: pd.DataFrame) -> np.ndarray:
    """uint8 tiles in manifest order."""
    parts = [
        store.read_tiles(str(s), g["index"].to_numpy())
        for s, g in manifest.groupby("slide_id", sort=False)
    ]
    order = np.concatenate(
        [g.index.to_numpy() for _, g in manifest.groupby("slide_id", sort=False)]
    )
    tiles = np.concatenate(parts)
    out = np.empty_like(tiles)
    out[np.argsort(np.argsort(order))] = tiles
    return out


def _build(t: ClassifierTrainConfig, n_classes: int, in_channels: int = 3) -> TileCNN:
    return TileCNN(tuple(t.channels), 1 if n_classes == 2 else n_classes, in_channels=in_channels)


@dataclass
class _WorkerData:
    """One worker's copy of the data set: all tiles in memory, split into train and validation,
    labels as class indices, and the channel normalisation on the training device."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    val_slides: np.ndarray  # slide_id of each validation tile
    mean: torch.Tensor
    std: torch.Tensor


def _load_worker_data(
    cfg: Config, config: dict[str, Any], names: list[str], device: torch.device
) -> _WorkerData:
    """The tiles split by the driver's validation mask, with the driver's channel statistics."""
    t = cfg.classifier.train
    store = TileStore(cfg.workdir / "tiles")
    manifest = store.read_manifest()
    val = np.asarray(config["val_mask"], dtype=bool)
    tiles = _read_all(store, manifest)
    y = manifest[t.label_column].astype(str).map({n: i for i, n in enumerate(names)}).to_numpy()
    train_idx, val_idx = np.flatnonzero(~val), np.flatnonzero(val)
    return _WorkerData(
        x_train=tiles[train_idx],
        y_train=y[train_idx],
        x_val=tiles[val_idx],
        y_val=y[val_idx],
        val_slides=manifest["slide_id"].to_numpy()[val_idx],
        mean=torch.tensor(config["mean"], device=device),
        std=torch.tensor(config["std"], device=device),
    )


def _resume(model: TileCNN, optimizer: torch.optim.Optimizer) -> list[dict[str, float]]:
    """Load Ray Train's checkpoint, if any, into ``model`` and ``optimizer``; the metrics rows
    of the epochs done (none on a fresh start)."""
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return []
    with ckpt.as_directory() as d:
        saved = load_state(Path(d))
        try:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(
                f"{d}: checkpoint does not match this classifier config ({exc}); use a new "
                "workdir or classifier.train.storage_path to start over"
            ) from None
        return read_parquet(Path(d) / METRICS_FILE).to_dict(orient="records")


def _train_one_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: _WorkerData,
    t: ClassifierTrainConfig,
    device: torch.device,
    *,
    epoch: int,
    rank: int,
    world: int,
    steps_per_epoch: int,
) -> tuple[float, int]:
    """This rank's share of one epoch; the summed loss and tile count over all ranks."""
    batches = epoch_batches(len(data.y_train), t.batch_size // world, epoch, t.seed, rank, world)
    gen = torch.Generator().manual_seed(t.seed * 1000 + epoch * world + rank)
    loss_sum, count = train_epoch(
        model,
        optimizer,
        data.x_train,
        data.y_train,
        batches,
        data.mean,
        data.std,
        gen=gen,
        augment=t.dihedral,
        step0=epoch * steps_per_epoch,
        total_steps=steps_per_epoch * t.epochs,
        base_lr=t.lr,
        device=device,
        stain=t.stain_jitter,
    )
    if world > 1:
        both = torch.tensor([loss_sum, float(count)], dtype=torch.float64)
        dist.all_reduce(both)
        loss_sum, count = float(both[0]), int(both[1])
    return loss_sum, count


def _epoch_row(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: _WorkerData,
    device: torch.device,
    epoch: int,
    train_loss: float,
    t0: float,
) -> dict[str, float]:
    """Rank 0's metrics row of an epoch: the training loss, then the validation scores."""
    logits = predict_logits(model, data.x_val, data.mean, data.std, device=device)
    return {
        "epoch": epoch + 1,
        "train_loss": train_loss,
        **evaluate(logits, data.y_val, data.val_slides),
        "n_train_tiles": len(data.y_train),
        "n_val_tiles": len(data.y_val),
        "lr": float(optimizer.param_groups[0]["lr"]),
        "seconds": time.perf_counter() - t0,
    }


def _report_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rows: list[dict[str, float]],
) -> None:
    """Rank 0: checkpoint the model, optimizer and metrics so far into ``folder`` and report
    them with the last row's metrics."""
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_state(folder, {"model": sd, "optimizer": optimizer.state_dict()})
    write_parquet(pd.DataFrame(rows), folder / METRICS_FILE)
    checkpoint = ray.train.Checkpoint.from_directory(folder)
    ray.train.report({k: float(v) for k, v in rows[-1].items()}, checkpoint=checkpoint)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: all tiles in memory, this rank's share of each epoch."""
    cfg = config_from_dict(config["cfg"])
    t = cfg.classifier.train
    names: list[str] = config["class_names"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(t.cpus_per_worker)
    device = ray.train.torch.get_device() if t.use_gpu else torch.device("cpu")
    torch.manual_seed(t.seed)  # identical init on every worker
    model = _build(t, len(names), len(config["mean"]))
    optimizer = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    rows = _resume(model, optimizer)
    model = prepare_model(model) if world > 1 or t.use_gpu else model.to(device)
    bare = model.module if hasattr(model, "module") else model
    data = _load_worker_data(cfg, config, names, device)
    n_train = len(data.y_train)
    steps_per_epoch = len(epoch_batches(n_train, t.batch_size // world, 0, t.seed, rank, world))
    for epoch in range(len(rows), t.epochs):
        t0 = time.perf_counter()
        loss_sum, count = _train_one_epoch(
            model,
            optimizer,
            data,
            t,
            device,
            epoch=epoch,
            rank=rank,
            world=world,
            steps_per_epoch=steps_per_epoch,
        )
        train_loss = loss_sum / max(count, 1)
        with staging_dir() as d:
            if rank == 0:
                rows.append(_epoch_row(bare, optimizer, data, device, epoch, train_loss, t0))
                _report_checkpoint(Path(d), bare, optimizer, rows)
            else:
                rows.append({"epoch": epoch + 1})
                ray.train.report({"epoch": float(epoch + 1)}, checkpoint=None)


def export_classifier(
    checkpoint_dir: Path,
    cfg: Config,
    names: list[str],
    mean: list[float],
    std: list[float],
    sample: np.ndarray,
) -> dict[str, Any]:
    """Write ``model.pt`` (TorchScript) + ``model.safetensors`` + ``model.json`` and the metrics;
    checks that the reloaded TorchScript gives bit-identical logits on ``sample`` tiles."""
    t = cfg.classifier.train
    out = cfg.workdir / BUILTIN_DIR
    saved = load_state(checkpoint_dir)
    model = _build(t, len(names), len(mean))
    model.load_state_dict(saved["model"])
    model.eval()
    n_outputs = model.n_outputs
    scripted = torch.jit.script(model)
    card = {
        "format": "torchscript",
        "input_size": int(sample.shape[1]),
        "channels": int(sample.shape[-1]),
        "mean": mean,
        "std": std,
        "class_names": names,
        "explain": names[-1] if len(names) == 2 else names[0],
        "outputs": "logit of class_names[1], [N]" if n_outputs == 1 else "logits [N, C]",
        "entry_point": ENTRY_POINT,
        "entry_kwargs": {
            "channels": list(t.channels),
            "n_outputs": n_outputs,
            **({"in_channels": len(mean)} if len(mean) != 3 else {}),
        },
        "weights": "model.safetensors",
        "gradcam_layer": f"features.{len(t.channels) - 1}",
        "tile_mpp": cfg.tiling.mpp,
        "label_column": t.label_column,
        "config": cfg.dump()["classifier"]["train"],
    }
    save_weights(out / "model.safetensors", model.state_dict())
    save_torchscript(scripted, out / "model.pt")
    write_parquet(read_parquet(checkpoint_dir / METRICS_FILE), out / METRICS_FILE)
    reloaded = load_torchscript(out / "model.pt")
    c = len(mean)
    x = (tiles_to_tensor(sample) - torch.tensor(mean).view(1, c, 1, 1)) / torch.tensor(std).view(
        1, c, 1, 1
    )
    with torch.no_grad():
        if not torch.equal(model(x), reloaded(x)):
            raise ClassifierError(f"{out / 'model.pt'}: reloaded TorchScript differs from eager")
    write_card(out / BUILTIN_CARD, card)  # last: the card marks a complete export
    return card


def latest_checkpoint(storage: str | WorkPath) -> WorkPath | None:
    found = [
        p for p in (as_path(storage) / "train").glob("checkpoint_*") if (p / METRICS_FILE).is_file()
    ]
    found.sort(key=str)
    return found[-1] if found else None


def run_train_classifier(cfg: Config) -> dict[str, Any]:
    """Train (or resume) and export the built-in classifier; returns the card + metrics."""
    manifest, names, val = check_inputs(cfg)
    t = cfg.classifier.train
    out = cfg.workdir / BUILTIN_DIR
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_yaml(out / "config.yaml", cfg.dump())
    store = TileStore(cfg.workdir / "tiles")
    train_rows = np.flatnonzero(~val)
    pick = np.random.default_rng(t.seed).choice(
        train_rows, min(2000, len(train_rows)), replace=False
    )
    sample = _read_all(store, manifest.iloc[np.sort(pick)])
    mean, std = channel_stats(sample)
    col = group_column(manifest, t.group_by)
    split = manifest.groupby("slide_id", sort=True).agg(
        group=(col, "first"), label=(t.label_column, "first")
    )
    split["split"] = np.where(split.index.isin(manifest.loc[val, "slide_id"]), "val", "train")
    write_parquet(split.reset_index(), out / "split.parquet")
    storage = as_path(t.storage_path, cfg.storage_options) if t.storage_path else out / "ray"
    checkpoint, fit_seconds = fit_ray_train(
        train_loop_per_worker,
        {
            "cfg": cfg.dump(),
            "class_names": names,
            "val_mask": val.tolist(),
            "mean": mean,
            "std": std,
        },
        t,
        storage,
        cfg.ray,
        num_to_keep=2,
    )
    with checkpoint.as_directory() as d:
        card = export_classifier(Path(d), cfg, names, mean, std, sample[:256])
    # The exported model must meet the contract it promises (checked as a user would load it).
    exported = ClassifierConfig(model=str(out / "model.pt"))
    load_classifier(
        resolve_spec(exported, cfg.workdir, int(sample.shape[1]), int(sample.shape[-1]))
    )
    metrics = read_parquet(out / METRICS_FILE)
    return {"card": card, "metrics": metrics, "fit_seconds": fit_seconds}
