"""invert / train-encoder on a real local Ray: actor pool, parts, resume, a killed actor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pipeline.classifier.contract import tiles_to_tensor
from pipeline.config import Config, config_from_dict
from pipeline.gan.generator import load_generator
from pipeline.gan.presets import PRESETS
from pipeline.gan.step import StepConfig, TrainState
from pipeline.io.checkpoints import save_generator, save_weights
from pipeline.io.inversion_store import InversionStore
from pipeline.io.tile_store import TileStore
from tasks.cli import EXIT_FATAL, main
from tasks.invert import run_invert, run_train_encoder
from tasks.make_cohort import make_cohort
from tasks.pool import FAULT_ENV
from tasks.tile import run_tiling


class RedScore(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 20.0 * (x[:, 0].mean(dim=(1, 2)) - 0.6)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, ray_local) -> dict[str, Path]:
    """32 px tiles of two small slides, a random tiny32 generator (+ D), a TorchScript model."""
    root = tmp_path_factory.mktemp("inv")
    table = make_cohort(root / "cohort", n_slides=2, seed=4, size_um=256)
    cfg = config_from_dict(
        {
            "cohort": str(table),
            "workdir": str(root / "tiled"),
            "tiling": {"mpp": 1.0, "size": 32, "min_tissue": 0.5},
        }
    )
    assert run_tiling(cfg).n_tiles >= 40
    state = TrainState.create(PRESETS["tiny32"], StepConfig(), seed=0)
    gen = root / "gen"
    save_weights(gen / "discriminator.safetensors", state.D.state_dict())
    save_generator(
        gen, state.G_ema.state_dict(), {"spec": PRESETS["tiny32"].to_dict(), "preset": "tiny32"}
    )
    model = root / "red.pt"
    torch.jit.save(torch.jit.script(RedScore()), str(model))
    return {"tiles": cfg.workdir / "tiles", "gen": gen, "model": model}


def inv_config(setup: dict[str, Path], workdir: Path, **inversion) -> Config:
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "tiles").exists():
        (workdir / "tiles").symlink_to(setup["tiles"])
    base = {
        "generator": str(setup["gen"]),
        "batch_size": 16,
        "concurrency": 2,
        "encoder": {"steps": 3, "batch": 4, "width": 8, "num_cpus": 1},
        "refine": {"steps": 2},
        "task_timeout_s": 120,
    }
    return config_from_dict(
        {
            "cohort": "unused.csv",
            "workdir": str(workdir),
            "classifier": {"model": str(setup["model"]), "class_names": ["other", "red"]},
            "inversion": {**base, **inversion},
        }
    )


def check_outputs(cfg: Config) -> pd.DataFrame:
    store = InversionStore(cfg.workdir / "inversion")
    table = store.read_table()
    tiles = pd.read_parquet(cfg.workdir / "tiles" / "tiles.parquet")
    assert table["tile_id"].tolist() == tiles["tile_id"].tolist()  # every tile once, in order
    assert table["latent_row"].tolist() == list(range(len(table)))
    assert (table["status"] == "ok").all() and (table["error"] == "").all()
    for col in ("mse", "ssim", "prob_real", "prob_recon", "seconds"):
        assert np.isfinite(table[col]).all(), col
    lat = store.read_latents()
    assert lat.shape == (len(table), 1, 128) and np.isfinite(lat).all()
    assert store.read_tile_ids().tolist() == table["tile_id"].tolist()
    return table


def test_pool_of_two_resume_and_cached_encoder(setup, tmp_path: Path) -> None:
    cfg = inv_config(setup, tmp_path / "w")
    s = run_invert(cfg)
    assert s.encoder_trained and s.n_inverted == s.n_selected and s.n_skipped == 0
    table = check_outputs(cfg)
    assert (table["steps"] == 2).all()
    assert (cfg.workdir / "inversion" / "examples.png").is_file()
    lat_before = InversionStore(cfg.workdir / "inversion").read_latents()

    # Half the parts lost (as if killed): a re-run inverts only those tiles, no duplicates.
    parts = sorted((cfg.workdir / "inversion" / "parts").glob("*.parquet"))
    lost = parts[::2]
    n_lost = sum(len(pd.read_parquet(p)) for p in lost)
    for p in lost:
        p.unlink()
    s2 = run_invert(cfg)
    assert (
        not s2.encoder_trained and s2.n_inverted == n_lost and s2.n_skipped == s.n_selected - n_lost
    )
    check_outputs(cfg)
    # Same seeds per batch: the redone tiles get the same latents.
    np.testing.assert_allclose(
        InversionStore(cfg.workdir / "inversion").read_latents(), lat_before, atol=1e-5
    )
    assert run_invert(cfg).n_inverted == 0
    meta, trained = run_train_encoder(cfg)
    assert not trained and meta["steps"] == 3


def test_a_new_loss_version_retrains_the_encoder(monkeypatch) -> None:
    """Encoders cached (and parts inverted) under other reconstruction losses are not reused:
    the loss version is part of the encoder's cache key, so a workdir from before the
    losses compared the image as shown trains a new encoder and redoes its parts."""
    import tasks.invert as invert
    from pipeline.config import InversionConfig
    from pipeline.inversion.encoder import EncoderSpec

    spec, icfg = EncoderSpec(32, 8, 4, width=8), InversionConfig()
    key = invert.encoder_key("gen", spec, icfg)
    assert invert.encoder_key("gen", spec, icfg) == key
    monkeypatch.setattr(invert, "LOSS_VERSION", invert.LOSS_VERSION - 1)
    assert invert.encoder_key("gen", spec, icfg) != key


class GreenScore(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 20.0 * (x[:, 1].mean(dim=(1, 2)) - 0.4)


def test_a_new_classifier_rescores_without_inverting(setup, tmp_path: Path) -> None:
    """The latents do not depend on the classifier: a new one keeps every part and only
    scores the tiles and their reconstructions again; switching back restores the first
    scores, so the redrawn reconstructions are the ones the refinement made."""
    cfg = inv_config(setup, tmp_path / "w")
    first = run_invert(cfg)
    assert first.n_inverted == first.n_selected and first.n_rescored == 0
    red = check_outputs(cfg)
    store = InversionStore(cfg.workdir / "inversion")
    lat = store.read_latents()

    green_pt = tmp_path / "green.pt"
    torch.jit.save(torch.jit.script(GreenScore()), str(green_pt))
    green_cfg = cfg.model_copy(
        update={"classifier": cfg.classifier.model_copy(update={"model": str(green_pt)})}
    )
    s = run_invert(green_cfg)
    assert s.n_inverted == 0 and s.n_rescored == s.n_selected == len(red)
    green = check_outputs(green_cfg)
    np.testing.assert_array_equal(store.read_latents(), lat)
    for col in ("mse", "ssim", "steps"):
        np.testing.assert_array_equal(green[col], red[col])
    # the new scores are the new classifier's, on the tiles and on G(latents)
    gen = load_generator(setup["gen"])
    tiles = TileStore(setup["tiles"])
    x = torch.cat(
        [
            tiles_to_tensor(tiles.read_tiles(sid, g["index"].to_numpy()))
            for sid, g in green.groupby("slide_id", sort=False)
        ]
    )
    with torch.no_grad():
        recon = gen.synthesis(torch.from_numpy(lat)[:, 0])
    order = np.concatenate([g.index.to_numpy() for _, g in green.groupby("slide_id", sort=False)])
    want_real = torch.sigmoid(GreenScore()(x)).numpy()
    want_recon = torch.sigmoid(GreenScore()(recon)).numpy()
    np.testing.assert_allclose(green["prob_real"].to_numpy()[order], want_real, atol=1e-6)
    np.testing.assert_allclose(green["prob_recon"].to_numpy(), want_recon, atol=1e-5)
    assert not np.allclose(green["prob_real"], red["prob_real"])
    assert run_invert(green_cfg).n_rescored == 0  # scored by it already

    back = run_invert(cfg)
    assert back.n_inverted == 0 and back.n_rescored == len(red)
    again = check_outputs(cfg)
    np.testing.assert_allclose(again["prob_real"], red["prob_real"], atol=1e-6)
    np.testing.assert_allclose(again["prob_recon"], red["prob_recon"], atol=1e-5)


def test_an_actor_killed_on_its_first_batch(setup, tmp_path: Path, monkeypatch) -> None:
    marker = tmp_path / "fault.marker"
    monkeypatch.setenv(FAULT_ENV, str(marker))
    cfg = inv_config(
        setup, tmp_path / "w", concurrency=1, space="W+", selection={"mode": "per_slide", "n": 10}
    )
    s = run_invert(cfg)
    assert marker.is_file()  # the actor did die once
    store = InversionStore(cfg.workdir / "inversion")
    table = store.read_table()
    assert s.n_inverted == len(table) == 20 and table["tile_id"].is_unique
    assert (table.groupby("slide_id").size() == 10).all() and (table["status"] == "ok").all()
    assert store.read_latents().shape == (20, PRESETS["tiny32"].num_ws, 128)


def test_bad_inputs_fail_before_any_work(setup, tmp_path: Path, capsys) -> None:
    cases = [
        (["inversion.generator=" + str(tmp_path / "nothing")], "no generator in"),
        (["inversion.generator=null"], "no generator in"),  # workdir/gan does not exist
        (["classifier.model=" + str(tmp_path / "none.pt")], "classifier file not found"),
        (
            ["inversion.selection.mode=top_confident", "inversion.selection.k=2"],
            "needs " + str(tmp_path / "w" / "predictions.parquet"),
        ),
    ]
    workdir = tmp_path / "w"
    cfg = inv_config(setup, workdir)
    gen64 = tmp_path / "gen64"
    save_generator(
        gen64,
        TrainState.create(PRESETS["tiny64"], StepConfig()).G_ema.state_dict(),
        {"spec": PRESETS["tiny64"].to_dict()},
    )
    cases.append((["inversion.generator=" + str(gen64)], "tiles are 32 px but the generator"))
    cfg_file = tmp_path / "c.yaml"
    import yaml

    cfg_file.write_text(yaml.safe_dump(cfg.dump()))
    for overrides, message in cases:
        args = ["invert", str(cfg_file)] + [a for kv in overrides for a in ("--set", kv)]
        assert main(args) == EXIT_FATAL, overrides
        assert message in capsys.readouterr().err, overrides
        assert sorted(p.name for p in workdir.iterdir()) == ["tiles"]


def test_selection_modes(tmp_path: Path) -> None:
    from pipeline.config import SelectionConfig
    from pipeline.io.parquet import write_parquet
    from tasks.invert import select_tiles

    man = pd.DataFrame(
        {
            "tile_id": [f"t{i}" for i in range(12)],
            "slide_id": ["a"] * 6 + ["b"] * 6,
            "index": list(range(6)) * 2,
        }
    )
    two = select_tiles(man, SelectionConfig(mode="per_slide", n=2), tmp_path / "p.parquet")
    assert two.groupby("slide_id").size().tolist() == [2, 2]
    probs = [0.99, 0.1, 0.6, 0.02, 0.9, 0.5] * 2
    write_parquet(pd.DataFrame({"tile_id": man["tile_id"], "prob": probs}), tmp_path / "p.parquet")
    top = select_tiles(man, SelectionConfig(mode="top_confident", k=1), tmp_path / "p.parquet")
    assert top["tile_id"].tolist() == ["t0", "t3", "t6", "t9"]
