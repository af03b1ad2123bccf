"""``stylepath train-classifier``: the built-in tile CNN on the tiles' labels, with Ray Train.

Split by patient (or slide): no group is in both train and validation. Checkpoints every epoch
through Ray Train into ``classifier.train.storage_path`` (default ``workdir/classifier/ray``);
re-running the same command resumes. Outputs under ``workdir/classifier/``: ``metrics.parquet``
(one row per epoch), ``model.pt`` (TorchScript, the classifier contract) + ``model.json``
(its card) and ``model.safetensors`` (the same weights for ``pipeline.classifier.model:tile_cnn``,
so GradCAM can see inside), ``split.parquet`` (which slides were held out).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
import ray.train
import torch
import torch.distributed as dist
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer, prepare_model

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
from pipeline.io.paths import WorkPath, arrow_filesystem, as_path
from pipeline.io.tile_store import TileStore
from tasks.runtime import ensure_ray

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
        raise TrainInputError(f"classifier.train.batch_size {t.batch_size} is not divisible "
                              f"by num_workers {t.num_workers}")  # fmt: skip
    return manifest, names, val


def _read_all(store: TileStore, manifest: pd.DataFrame) -> np.ndarray:
    """uint8 tiles in manifest order."""
    parts = [store.read_tiles(str(s), g["index"].to_numpy())
             for s, g in manifest.groupby("slide_id", sort=False)]  # fmt: skip
    order = np.concatenate(
        [g.index.to_numpy() for _, g in manifest.groupby("slide_id", sort=False)]
    )
    tiles = np.concatenate(parts)
    out = np.empty_like(tiles)
    out[np.argsort(np.argsort(order))] = tiles
    return out


def _build(t: ClassifierTrainConfig, n_classes: int, in_channels: int = 3) -> TileCNN:
    return TileCNN(tuple(t.channels), 1 if n_classes == 2 else n_classes,
                   in_channels=in_channels)  # fmt: skip


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
    rows: list[dict[str, float]] = []
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
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
            rows = read_parquet(Path(d) / METRICS_FILE).to_dict(orient="records")
    model = prepare_model(model) if world > 1 or t.use_gpu else model.to(device)
    bare = model.module if hasattr(model, "module") else model

    store = TileStore(cfg.workdir / "tiles")
    manifest = store.read_manifest()
    val = np.asarray(config["val_mask"], dtype=bool)
    tiles = _read_all(store, manifest)
    y = manifest[t.label_column].astype(str).map({n: i for i, n in enumerate(names)}).to_numpy()
    train_idx, val_idx = np.flatnonzero(~val), np.flatnonzero(val)
    mean = torch.tensor(config["mean"], device=device)
    std = torch.tensor(config["std"], device=device)
    per_rank = t.batch_size // world
    steps_per_epoch = len(epoch_batches(len(train_idx), per_rank, 0, t.seed, rank, world))
    total_steps = steps_per_epoch * t.epochs
    x_train, y_train = tiles[train_idx], y[train_idx]
    for epoch in range(len(rows), t.epochs):
        t0 = time.perf_counter()
        batches = epoch_batches(len(train_idx), per_rank, epoch, t.seed, rank, world)
        gen = torch.Generator().manual_seed(t.seed * 1000 + epoch * world + rank)
        loss_sum, count = train_epoch(
            model, optimizer, x_train, y_train, batches, mean, std, gen=gen, augment=t.dihedral,
            step0=epoch * steps_per_epoch, total_steps=total_steps, base_lr=t.lr, device=device,
        )  # fmt: skip
        if world > 1:
            both = torch.tensor([loss_sum, float(count)], dtype=torch.float64)
            dist.all_reduce(both)
            loss_sum, count = float(both[0]), int(both[1])
        checkpoint = None
        with staging_dir() as d:
            if rank == 0:
                logits = predict_logits(bare, tiles[val_idx], mean, std, device=device)
                row = {"epoch": epoch + 1, "train_loss": loss_sum / max(count, 1),
                       **evaluate(logits, y[val_idx], manifest["slide_id"].to_numpy()[val_idx]),
                       "n_train_tiles": len(train_idx), "n_val_tiles": len(val_idx),
                       "lr": float(optimizer.param_groups[0]["lr"]),
                       "seconds": time.perf_counter() - t0}  # fmt: skip
                rows.append(row)
                sd = {k: v.detach().cpu() for k, v in bare.state_dict().items()}
                save_state(Path(d), {"model": sd, "optimizer": optimizer.state_dict()})
                write_parquet(pd.DataFrame(rows), Path(d) / METRICS_FILE)
                checkpoint = ray.train.Checkpoint.from_directory(d)
                ray.train.report({k: float(v) for k, v in row.items()}, checkpoint=checkpoint)
            else:
                rows.append({"epoch": epoch + 1})
                ray.train.report({"epoch": float(epoch + 1)}, checkpoint=None)


def export_classifier(checkpoint_dir: Path, cfg: Config, names: list[str], mean: list[float],
                      std: list[float], sample: np.ndarray) -> dict[str, Any]:  # fmt: skip
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
    found = [p for p in (as_path(storage) / "train").glob("checkpoint_*")
             if (p / METRICS_FILE).is_file()]  # fmt: skip
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
    pick = np.random.default_rng(t.seed).choice(train_rows, min(2000, len(train_rows)),
                                                replace=False)  # fmt: skip
    sample = _read_all(store, manifest.iloc[np.sort(pick)])
    mean, std = channel_stats(sample)
    col = group_column(manifest, t.group_by)
    split = manifest.groupby("slide_id", sort=True).agg(
        group=(col, "first"), label=(t.label_column, "first")
    )
    split["split"] = np.where(split.index.isin(manifest.loc[val, "slide_id"]), "val", "train")
    write_parquet(split.reset_index(), out / "split.parquet")
    storage = as_path(t.storage_path, cfg.storage_options) if t.storage_path else out / "ray"
    filesystem, storage_path = arrow_filesystem(storage)  # URL: the workdir's fsspec filesystem
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    ensure_ray(cfg.ray)
    t0 = time.perf_counter()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg.dump(), "class_names": names, "val_mask": val.tolist(),
                           "mean": mean, "std": std},
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu,
                                     resources_per_worker={"CPU": t.cpus_per_worker}),
        run_config=RunConfig(name="train", storage_path=storage_path,
                             storage_filesystem=filesystem,
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=t.max_failures)),
    )  # fmt: skip
    result = trainer.fit()
    fit_seconds = time.perf_counter() - t0
    if result.checkpoint is None:
        raise CheckpointError(f"{storage}: training produced no checkpoint")
    with result.checkpoint.as_directory() as d:
        card = export_classifier(Path(d), cfg, names, mean, std, sample[:256])
    # The exported model must meet the contract it promises (checked as a user would load it).
    exported = ClassifierConfig(model=str(out / "model.pt"))
    load_classifier(resolve_spec(exported, cfg.workdir, int(sample.shape[1]),
                                 int(sample.shape[-1])))  # fmt: skip
    metrics = read_parquet(out / METRICS_FILE)
    return {"card": card, "metrics": metrics, "fit_seconds": fit_seconds}
