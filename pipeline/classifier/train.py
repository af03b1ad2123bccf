"""Training math of the built-in tile classifier: split, batches, one epoch, validation metrics.

Pure functions on arrays, tensors and dataframes; ``tasks/train_classifier.py`` runs them on Ray
Train workers.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from pipeline.classifier.augment import dihedral, stain_jitter
from pipeline.classifier.contract import tiles_to_tensor


class TrainInputError(ValueError):
    """The tiles cannot train a classifier (no labels, one class, too few slides)."""


def group_column(manifest: pd.DataFrame, group_by: str) -> str:
    """The split unit: ``patient`` when asked or (``auto``) when the column has values."""
    if group_by == "auto":
        has = "patient" in manifest.columns and manifest["patient"].notna().all()
        return "patient" if has else "slide_id"
    if group_by not in manifest.columns:
        raise TrainInputError(f"tile manifest has no column {group_by!r} to split by")
    return group_by


def split_by_group(
    manifest: pd.DataFrame,
    label_column: str,
    val_fraction: float,
    seed: int,
    group_by: str = "auto",
) -> np.ndarray:
    """Boolean mask of validation tiles: whole groups (slides or patients) held out, stratified
    by label (each class keeps ≥ 1 group on each side), so no group is on both sides."""
    col = group_column(manifest, group_by)
    groups = manifest.groupby(col, sort=True)[label_column].agg(lambda s: s.mode().iloc[0])
    rng = np.random.default_rng(seed)
    val_groups: list = []
    for label, members in groups.groupby(groups, sort=True):
        ids = members.index.to_numpy()
        if len(ids) < 2:
            raise TrainInputError(
                f"class {label!r} has {len(ids)} {col} group(s); need ≥ 2 to hold one out"
            )
        k = min(len(ids) - 1, max(1, round(val_fraction * len(ids))))
        val_groups.extend(rng.permutation(ids)[:k].tolist())
    return manifest[col].isin(val_groups).to_numpy()


def class_names_of(labels: pd.Series) -> list[str]:
    """Sorted distinct labels as strings (≥ 2 required)."""
    if labels.isna().any():
        raise TrainInputError(f"{int(labels.isna().sum())} tiles have no label")
    names = sorted({str(v) for v in labels})
    if len(names) < 2:
        raise TrainInputError(f"need ≥ 2 classes to train, found {names}")
    return names


def channel_stats(tiles: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 ``[N, H, W, C]`` tiles on the [0, 1] scale."""
    x = tiles.reshape(-1, tiles.shape[-1]).astype(np.float64) / 255.0
    return x.mean(0).round(6).tolist(), np.maximum(x.std(0), 1e-3).round(6).tolist()


def epoch_batches(
    n: int, batch_size: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1
) -> list[np.ndarray]:
    """This rank's batches of one epoch: a seeded permutation split into ``world_size`` equal
    parts, whole batches only (every rank takes the same number of steps)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    per_rank = n // world_size
    mine = order[rank * per_rank : (rank + 1) * per_rank]
    n_batches = per_rank // batch_size
    return [mine[i * batch_size : (i + 1) * batch_size] for i in range(n_batches)]


def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """BCE on ``[N]`` logits (binary), cross entropy on ``[N, C]``."""
    if logits.ndim == 1:
        return F.binary_cross_entropy_with_logits(logits, y.float())
    return F.cross_entropy(logits, y)


def cosine_lr(step: int, total: int, floor: float = 0.05) -> float:
    """Multiplier of the base learning rate: cosine from 1 to ``floor`` over ``total`` steps."""
    t = min(step / max(total, 1), 1.0)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    tiles: np.ndarray,
    y: np.ndarray,
    batches: list[np.ndarray],
    mean: torch.Tensor,
    std: torch.Tensor,
    *,
    gen: torch.Generator,
    augment: bool,
    step0: int,
    total_steps: int,
    base_lr: float,
    device: torch.device | str = "cpu",
    stain: float = 0.0,
) -> tuple[float, int]:
    """One pass over ``batches`` of uint8 ``tiles``; returns (sum of losses, images).
    ``augment``: random flips/90° rotations; ``stain``: the stain jitter's σ (``augment.py``)."""
    model.train()
    total, count = 0.0, 0
    for i, idx in enumerate(batches):
        idx = np.sort(idx)
        x = tiles_to_tensor(tiles[idx])
        if augment:
            x = dihedral(x, gen)
        x = stain_jitter(x, stain, gen)
        x = normalise(x.to(device), mean, std)
        target = torch.from_numpy(y[idx]).to(device)
        for group in optimizer.param_groups:
            group["lr"] = base_lr * cosine_lr(step0 + i, total_steps)
        loss = loss_fn(model(x), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(idx)
        count += len(idx)
    return total, count


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    tiles: np.ndarray,
    mean: torch.Tensor,
    std: torch.Tensor,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Eval-mode logits of uint8 tiles (on CPU)."""
    model.eval()
    outs = [
        model(normalise(tiles_to_tensor(tiles[a : a + batch_size]).to(device), mean, std))
        for a in range(0, len(tiles), batch_size)
    ]
    return torch.cat(outs).float().cpu()


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return float("nan")
    if p.ndim == 1:
        return float(roc_auc_score(y, p))
    return float(roc_auc_score(y, p, multi_class="ovr", labels=list(range(p.shape[1]))))


def class_probs(logits: torch.Tensor) -> np.ndarray:
    """``[N]`` probability of class 1 (binary) or ``[N, C]`` softmax."""
    if logits.ndim == 1:
        return torch.sigmoid(logits).numpy()
    return torch.softmax(logits, dim=1).numpy()


def evaluate(logits: torch.Tensor, y: np.ndarray, slide_ids: np.ndarray) -> dict[str, float]:
    """Validation loss, AUC and accuracy per tile and per slide (a slide's score is the mean
    of its tiles' class probabilities; its label is its tiles' label)."""
    p = class_probs(logits)
    pred = (p >= 0.5).astype(int) if p.ndim == 1 else p.argmax(1)
    df = pd.DataFrame({"slide": slide_ids, "y": y})
    probs = pd.DataFrame(p.reshape(len(p), -1))
    slide_p = probs.groupby(df["slide"].to_numpy(), sort=True).mean().to_numpy()
    slide_y = df.groupby("slide", sort=True)["y"].agg(lambda s: s.mode().iloc[0]).to_numpy()
    if p.ndim == 1:
        slide_p = slide_p[:, 0]
        slide_pred = (slide_p >= 0.5).astype(int)
    else:
        slide_pred = slide_p.argmax(1)
    return {
        "val_loss": float(loss_fn(logits, torch.from_numpy(y))),
        "val_auc_tile": _auc(y, p),
        "val_acc_tile": float((pred == y).mean()),
        "val_auc_slide": _auc(slide_y, slide_p),
        "val_acc_slide": float((slide_pred == slide_y).mean()),
    }
