"""Training math of the built-in classifier: the split, batches, an epoch, metrics, export."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.classifier.augment import dihedral
from pipeline.classifier.model import TileCNN
from pipeline.classifier.train import (
    TrainInputError,
    channel_stats,
    class_names_of,
    epoch_batches,
    evaluate,
    split_by_group,
    train_epoch,
)


def manifest(patients: bool) -> pd.DataFrame:
    rows = []
    for s in range(8):
        for i in range(5):
            rows.append(
                {
                    "tile_id": f"s{s}_{i}",
                    "slide_id": f"s{s}",
                    "index": i,
                    "label": "tumor" if s % 2 else "normal",
                }
            )
    df = pd.DataFrame(rows)
    if patients:  # two slides per patient
        s = df["slide_id"].str[1:].astype(int)
        df["patient"] = "p" + (s // 4 * 4 + s % 2).astype(str)  # same-label slide pairs
    return df


@pytest.mark.parametrize("patients", [False, True])
def test_split_keeps_groups_whole_and_stratified(patients: bool) -> None:
    df = manifest(patients)
    val = split_by_group(df, "label", 0.25, seed=0)
    col = "patient" if patients else "slide_id"
    assert not set(df.loc[val, col]) & set(df.loc[~val, col])
    assert set(df.loc[val, "label"]) == set(df.loc[~val, "label"]) == {"normal", "tumor"}
    assert np.array_equal(val, split_by_group(df, "label", 0.25, seed=0))  # deterministic
    assert not np.array_equal(val, split_by_group(df, "label", 0.25, seed=3))
    if patients:  # the patient rule wins over the slide rule
        assert df.loc[val, "slide_id"].nunique() == 4
        by_slide = split_by_group(df, "label", 0.25, 0, "slide_id")
        assert np.array_equal(
            by_slide, split_by_group(df.drop(columns="patient"), "label", 0.25, 0)
        )


def test_bad_training_inputs() -> None:
    df = manifest(False)
    with pytest.raises(TrainInputError, match="need ≥ 2 classes"):
        class_names_of(pd.Series(["a", "a"]))
    with pytest.raises(TrainInputError, match="2 tiles have no label"):
        class_names_of(pd.Series(["a", None, None]))
    one_normal = df[(df.label == "tumor") | (df.slide_id == "s0")]
    with pytest.raises(TrainInputError, match="class 'normal' has 1 slide_id group"):
        split_by_group(one_normal, "label", 0.25, 0)
    with pytest.raises(TrainInputError, match="no column 'patient'"):
        split_by_group(df, "label", 0.25, 0, "patient")


def test_batches_dihedral_and_stats() -> None:
    ranks = [epoch_batches(103, 8, epoch=2, seed=1, rank=r, world_size=2) for r in range(2)]
    assert [len(b) for b in ranks] == [6, 6] and all(len(x) == 8 for b in ranks for x in b)
    flat = [np.concatenate(b) for b in ranks]
    assert not set(flat[0]) & set(flat[1])
    assert not np.array_equal(flat[0], np.concatenate(epoch_batches(103, 8, 3, 1, 0, 2)))
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    y = dihedral(x, torch.Generator().manual_seed(0))
    for a, b in zip(x, y, strict=True):
        torch.testing.assert_close(a.flatten().sort().values, b.flatten().sort().values)
    tiles = np.zeros((2, 4, 4, 3), np.uint8)
    tiles[..., 0] = 255
    mean, std = channel_stats(tiles)
    assert mean == [1.0, 0.0, 0.0] and std == [0.001] * 3


def test_evaluate_per_tile_and_per_slide() -> None:
    logits = torch.tensor([3.0, 1.0, -2.0, 0.5, -1.0, -3.0])
    y = np.array([1, 1, 1, 0, 0, 0])
    slides = np.array(["a", "a", "b", "c", "c", "d"])
    m = evaluate(logits, y, slides)
    assert m["val_acc_tile"] == pytest.approx(4 / 6)
    assert m["val_auc_tile"] == pytest.approx(7 / 9)
    # slides: a 1 (p≈.84), b 1 (p≈.12), c 0 (p≈.44), d 0 (p≈.05)
    assert m["val_acc_slide"] == pytest.approx(3 / 4) and m["val_auc_slide"] == pytest.approx(0.75)
    three = evaluate(torch.eye(3)[[0, 1, 2, 2]] * 5, np.array([0, 1, 2, 2]), np.array(list("abcc")))
    assert three["val_acc_tile"] == 1.0 and three["val_auc_tile"] == 1.0
    assert np.isnan(evaluate(logits[:2], y[:2], slides[:2])["val_auc_tile"])


def test_an_epoch_learns_and_the_export_reloads_identically(tmp_path, one_thread) -> None:
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 120, size=(64, 16, 16, 3)).astype(np.uint8)
    y = np.arange(64) % 2
    tiles[y == 1, 4:12, 4:12, 2] = 250  # class 1: a blue square
    torch.manual_seed(0)
    model = TileCNN((8, 8), 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    mean, std = torch.tensor([0.3] * 3), torch.tensor([0.2] * 3)
    losses = []
    for epoch in range(4):
        s, n = train_epoch(
            model,
            opt,
            tiles,
            y,
            epoch_batches(64, 16, epoch, 0),
            mean,
            std,
            gen=torch.Generator().manual_seed(epoch),
            augment=True,
            step0=epoch * 4,
            total_steps=16,
            base_lr=0.01,
        )
        losses.append(s / n)
    assert n == 64 and losses[-1] < losses[0] * 0.8
    model.eval()
    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    x = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(torch.jit.load(str(path))(x), model(x))
