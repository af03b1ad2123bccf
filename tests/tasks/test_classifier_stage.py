"""train-classifier and predict on a real local Ray, real zarr tiles and parquet files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pipeline.classifier.contract import load_classifier, resolve_spec
from pipeline.config import ClassifierConfig, Config, config_from_dict
from pipeline.io.heatmap_store import HeatmapStore
from pipeline.io.tile_store import TileStore
from tasks.cli import EXIT_FATAL, main
from tasks.make_cohort import make_cohort
from tasks.pool import FAULT_ENV
from tasks.predict import run_predict
from tasks.tile import run_tiling
from tasks.train_classifier import run_train_classifier


@pytest.fixture(scope="module")
def tiles_4(tmp_path_factory, ray_local) -> Path:
    """32 px tiles of four small synthetic slides (two tumor, two normal)."""
    root = tmp_path_factory.mktemp("cls")
    table = make_cohort(root / "cohort", n_slides=4, seed=5, size_um=320)
    cfg = config_from_dict(
        {
            "cohort": str(table),
            "workdir": str(root / "tiled"),
            "tiling": {"mpp": 1.0, "size": 32, "min_tissue": 0.5},
        }
    )
    assert run_tiling(cfg).n_tiles >= 100
    return cfg.workdir / "tiles"


def workdir_with(tiles: Path, workdir: Path, **classifier) -> Config:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tiles").symlink_to(tiles)
    base = {
        "train": {
            "epochs": 2,
            "batch_size": 16,
            "channels": [8, 16],
            "num_workers": 2,
            "cpus_per_worker": 1,
        },
        "predict": {
            "batch_size": 32,
            "concurrency": 2,
            "tiles_per_task": 64,
            "heatmap_grid": 4,
            "occlusion_patch": 16,
            "occlusion_stride": 8,
        },
    }
    for key in ("train", "predict"):
        base[key].update(classifier.pop(key, {}))
    return config_from_dict(
        {"cohort": "unused.csv", "workdir": str(workdir), "classifier": {**base, **classifier}}
    )


def test_train_export_and_predict(tiles_4: Path, tmp_path: Path) -> None:
    cfg = workdir_with(tiles_4, tmp_path / "w")
    res = run_train_classifier(cfg)  # Ray Train, 2 workers (DDP over gloo)
    out = cfg.workdir / "classifier"
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert metrics["epoch"].tolist() == [1, 2]
    for col in (
        "train_loss",
        "val_loss",
        "val_auc_tile",
        "val_acc_tile",
        "val_auc_slide",
        "val_acc_slide",
        "n_train_tiles",
        "n_val_tiles",
        "seconds",
    ):
        assert np.isfinite(metrics[col]).all(), col
    split = pd.read_parquet(out / "split.parquet")
    assert split.groupby("split")["label"].nunique().to_dict() == {"train": 2, "val": 2}
    tiles = TileStore(tiles_4).read_manifest()
    assert (
        metrics["n_val_tiles"].iloc[0]
        == tiles["slide_id"].isin(split.loc[split.split == "val", "slide_id"]).sum()
    )
    card = res["card"]
    assert card["class_names"] == ["normal", "tumor"] and card["explain"] == "tumor"
    assert card["input_size"] == 32 and len(card["mean"]) == 3

    # Export → reload: the TorchScript file and the nn.Module rebuilt from safetensors agree
    # exactly with each other through the contract loader.
    script = load_classifier(
        resolve_spec(ClassifierConfig(model=str(out / "model.pt")), cfg.workdir, 32)
    )
    module = load_classifier(resolve_spec(ClassifierConfig(), cfg.workdir, 32))
    assert script.is_script and not module.is_script
    x = torch.rand(7, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(script(x), module(x))

    # Predict with the built-in (an nn.Module: GradCAM).
    summary = run_predict(cfg)
    assert summary.methods == ["gradcam"] and summary.explained_class == "tumor"
    preds = pd.read_parquet(cfg.workdir / "predictions.parquet")
    assert preds["tile_id"].tolist() == tiles["tile_id"].tolist()
    assert list(preds.columns) == ["tile_id", "slide_id", "index", "logit", "prob"]
    torch.testing.assert_close(
        torch.tensor(preds["prob"].to_numpy()),
        torch.sigmoid(torch.tensor(preds["logit"].to_numpy())),
    )
    heat = HeatmapStore(cfg.workdir / "heatmaps")
    for sid, group in tiles.groupby("slide_id"):
        maps = heat.read("gradcam", sid)
        assert maps.shape == (len(group), 4, 4) and maps.min() >= 0 and maps.max() <= 1
    assert (cfg.workdir / "heatmaps" / "top.png").is_file()
    assert run_predict(cfg).skipped


class RedScore(nn.Module):
    """A user's model: the logit of 'red' is 20 · (mean red − 0.6)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 20.0 * (x[:, 0].mean(dim=(1, 2)) - 0.6)


def test_user_torchscript_end_to_end(tiles_4: Path, tmp_path: Path) -> None:
    model_path = tmp_path / "user" / "red.pt"
    model_path.parent.mkdir()
    torch.jit.save(torch.jit.script(RedScore()), str(model_path))
    cfg = workdir_with(
        tiles_4, tmp_path / "w", model=str(model_path), input_size=16, class_names=["other", "red"]
    )
    summary = run_predict(cfg)
    assert summary.methods == ["occlusion"] and summary.explained_class == "red"
    preds = pd.read_parquet(cfg.workdir / "predictions.parquet")
    store, heat = TileStore(tiles_4), HeatmapStore(cfg.workdir / "heatmaps")
    assert heat.methods() == ["occlusion"] and len(preds) == len(store.read_manifest())
    for sid, group in preds.groupby("slide_id"):
        tiles = torch.from_numpy(store.read_tiles(sid)).permute(0, 3, 1, 2).float() / 255
        small = torch.nn.functional.interpolate(
            tiles, size=(16, 16), mode="bilinear", align_corners=False, antialias=True
        )
        expected = torch.sigmoid(20.0 * (small[:, 0].mean(dim=(1, 2)) - 0.6))
        got = torch.tensor(group.sort_values("index")["prob"].to_numpy())
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        maps = heat.read("occlusion", sid)
        assert maps.shape == (len(group), 4, 4) and np.isfinite(maps).all()
    assert run_predict(cfg).skipped
    # A changed model file is a new fingerprint: scored again.
    torch.jit.save(torch.jit.script(nn.Sequential(RedScore())), str(model_path))
    assert not run_predict(cfg).skipped


def test_a_predict_actor_killed_mid_job(tiles_4: Path, tmp_path: Path, monkeypatch) -> None:
    """The pool replaces an actor that died on its first job; the tiles it held are scored
    by the new one: every tile once, with the same scores as a clean run."""
    model_path = tmp_path / "red.pt"
    torch.jit.save(torch.jit.script(RedScore()), str(model_path))
    kw = {"model": str(model_path), "input_size": 16, "class_names": ["other", "red"]}
    clean_cfg = workdir_with(tiles_4, tmp_path / "clean", **kw)
    run_predict(clean_cfg)
    marker = tmp_path / "fault.marker"
    monkeypatch.setenv(FAULT_ENV, str(marker))
    cfg = workdir_with(tiles_4, tmp_path / "faulty", **kw)
    summary = run_predict(cfg)
    assert marker.is_file()  # an actor did die
    got = pd.read_parquet(cfg.workdir / "predictions.parquet")
    want = pd.read_parquet(clean_cfg.workdir / "predictions.parquet")
    assert got["tile_id"].is_unique and summary.n_tiles == len(got) == len(want)
    pd.testing.assert_frame_equal(got, want)


class NanModel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3)) / 0.0 * 0.0


class ImageOut(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


class Fixed16(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 16 * 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))[:, 0]


@pytest.mark.parametrize(
    ("model", "extra", "message"),
    [
        (None, [], "classifier file not found"),
        ("text", [], "not a TorchScript model"),
        (ImageOut(), [], r"output torch.float32 \[2, 32, 32\]"),
        (NanModel(), [], "non-finite outputs"),
        (Fixed16(), [], r"fails on input \[2, 3, 32, 32\]"),
        (
            Fixed16(),
            ["classifier.input_size=16", "classifier.predict.heatmaps=gradcam"],
            "GradCAM needs the model's layers",
        ),
    ],
    ids=["missing", "not-a-model", "shape", "nan", "input-size", "gradcam-on-torchscript"],
)
def test_bad_models_write_nothing(
    tiles_4: Path, tmp_path: Path, capsys, model, extra, message
) -> None:
    path = tmp_path / "model.pt"
    if model == "text":
        path.write_text("hello\n")
    elif model is not None:
        torch.jit.save(torch.jit.script(model), str(path))
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "tiles").symlink_to(tiles_4)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"cohort: x\nworkdir: {workdir}\nclassifier:\n  model: {path}\n")
    args = ["predict", str(cfg_file)] + [a for kv in extra for a in ("--set", kv)]
    assert main(args) == EXIT_FATAL
    err = capsys.readouterr().err
    assert message.replace("\\", "") in err or pytest.fail(err)
    assert sorted(p.name for p in workdir.iterdir()) == ["tiles"]
