"""train-gan on a real local Ray (Ray Train, 2 CPU workers), real zarr tiles, real files."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline.config import Config, GanTrainConfig, config_from_dict
from pipeline.features import feature_names
from pipeline.gan.data import DataCursor, TileBatches
from pipeline.gan.generator import load_generator
from pipeline.gan.networks import Generator
from pipeline.gan.quality import LINEARITY_MIN, best_net
from pipeline.io.checkpoints import CheckpointError, load_state, load_weights
from pipeline.io.tile_store import TileStore
from tasks.cli import main
from tasks.make_cohort import make_cohort
from tasks.tile import run_tiling
from tasks.train_gan import (
    BEST_DIR,
    FAULT_ENV,
    RESUMES_FILE,
    GanInputError,
    _keep_local_checkpoint,
    export_best,
    latest_checkpoint,
    run_train_gan,
    step_config,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _plain_dir_mode(tmp_path: Path) -> int:
    """The mode a plain ``mkdir`` gives a folder here (the umask's)."""
    (tmp_path / "plain").mkdir(exist_ok=True)
    return _mode(tmp_path / "plain")


@pytest.fixture(scope="module")
def tiles_32(tmp_path_factory, ray_local) -> Path:
    """A workdir with 32 px tiles of two small synthetic slides."""
    root = tmp_path_factory.mktemp("gan")
    table = make_cohort(root / "cohort", n_slides=2, seed=3, size_um=384)
    cfg = config_from_dict(
        {
            "cohort": str(table),
            "workdir": str(root / "tiles_only"),
            "tiling": {"mpp": 1.0, "size": 32, "min_tissue": 0.5},
        }
    )
    assert run_tiling(cfg).n_tiles >= 64
    return cfg.workdir / "tiles"


def gan_config(tiles: Path, workdir: Path, **gan) -> Config:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tiles").symlink_to(tiles)
    base = {
        "preset": "tiny32",
        "batch_size": 8,
        "tick_kimg": 0.016,
        "total_kimg": 0.032,
        "metric_images": 32,
        "metric_ticks": 1,
        "num_workers": 2,
        "cpus_per_worker": 1,
    }
    return config_from_dict(
        {"cohort": "unused.csv", "workdir": str(workdir), "gan": {**base, **gan}}
    )


@pytest.fixture(scope="module")
def full_run(tiles_32: Path, tmp_path_factory) -> Config:
    """Uninterrupted: 4 steps of 8 images over 2 workers, 2 ticks."""
    full_cfg = gan_config(tiles_32, tmp_path_factory.mktemp("full") / "full")
    meta = run_train_gan(full_cfg)
    assert meta["kimg"] == pytest.approx(0.032) and meta["preset"] == "tiny32"
    assert not (full_cfg.workdir / "gan" / RESUMES_FILE).exists()
    return full_cfg


def same_generator(a_dir: Path, b_dir: Path, what: str) -> None:
    a, b = load_generator(a_dir), load_generator(b_dir)
    for (name, pa), (_, pb) in zip(a.G.state_dict().items(), b.G.state_dict().items(), strict=True):
        torch.testing.assert_close(pa, pb, msg=f"{name} differs {what}")


def test_train_resume_and_load(tiles_32: Path, full_run: Config, tmp_path: Path) -> None:
    full_cfg = full_run
    out = full_cfg.workdir / "gan"
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert metrics["kimg"].tolist() == pytest.approx([0.016, 0.032])
    assert {
        "d_loss",
        "g_loss",
        "augment_p",
        "swd",
        "sec_per_kimg",
        "spread_ratio",
        "layout_corr",
        "nuclei_density",
        "nuclei_density_z",
    } <= set(metrics)
    assert np.isfinite(metrics["swd"]).all()
    assert len(list((out / "samples").glob("*.png"))) == 2 and (out / "reals.png").is_file()

    # Stopped after the first checkpoint, then re-run with the full target: resumes.
    part_cfg = gan_config(tiles_32, tmp_path / "part", total_kimg=0.016)
    assert run_train_gan(part_cfg)["kimg"] == pytest.approx(0.016)
    resumed_cfg = config_from_dict(
        {**part_cfg.dump(), "gan": {**part_cfg.dump()["gan"], "total_kimg": 0.032}}
    )
    assert run_train_gan(resumed_cfg)["kimg"] == pytest.approx(0.032)
    resumed_metrics = pd.read_parquet(resumed_cfg.workdir / "gan" / "metrics.parquet")
    assert resumed_metrics["kimg"].tolist() == pytest.approx([0.016, 0.032])  # not from 0

    # The resumed run replays the uninterrupted one exactly (data order, RNG, optimiser).
    same_generator(out, resumed_cfg.workdir / "gan", "after resume")
    resumes = (resumed_cfg.workdir / "gan" / RESUMES_FILE).read_text().splitlines()
    assert [json.loads(r)["nimg"] for r in resumes] == [16]
    a = load_generator(out)

    # The loading API.
    z = torch.randn(3, a.z_dim)
    w = a.mapping(z)
    img = a.synthesis(w)
    assert w.shape == (3, a.w_dim) and img.shape == (3, 3, 32, 32)
    assert img.min() >= 0 and img.max() <= 1
    torch.testing.assert_close(a.synthesis(w[:, None].expand(-1, a.num_ws, -1)), img)
    assert a.w_mean.shape == (a.w_dim,) and (a.w_std > 0).all()

    # Export for models/ (float16) and warm-start a new run from it.
    models = tmp_path / "models"
    cfg_file = tmp_path / "export.yaml"
    cfg_file.write_text(f"cohort: x\nworkdir: {full_cfg.workdir}\ngan:\n  preset: tiny32\n")
    assert main(["export-gan", str(cfg_file), str(models), "--half"]) == 0
    small = load_generator(models)
    torch.testing.assert_close(small.synthesis(w), img, atol=0.02, rtol=0)
    assert (models / "discriminator.safetensors").stat().st_size < (
        out / "generator.safetensors"
    ).stat().st_size
    warm_cfg = gan_config(
        tiles_32,
        tmp_path / "warm",
        total_kimg=0.016,
        init_from=str(models),
        input_shift=1.0,
        shift_source="noise",
    )
    assert run_train_gan(warm_cfg)["kimg"] == pytest.approx(0.016)
    warm_spec = load_generator(warm_cfg.workdir / "gan").G.spec
    assert (warm_spec.input_shift, warm_spec.shift_source) == (1.0, "noise")
    # exported with a config that does not mention it: the checkpoint's architecture wins
    plain = tmp_path / "plain.yaml"
    plain.write_text(f"cohort: x\nworkdir: {warm_cfg.workdir}\ngan:\n  preset: tiny32\n")
    assert main(["export-gan", str(plain), str(tmp_path / "again")]) == 0
    assert load_generator(tmp_path / "again").G.spec == warm_spec
    # and generator.json records how the run was trained, not the export command's config
    recorded = json.loads((tmp_path / "again" / "generator.json").read_text())["config"]
    assert (recorded["input_shift"], recorded["init_from"]) == (1.0, str(models))


def test_killed_worker_resumes_from_checkpoint(
    tiles_32: Path, full_run: Config, tmp_path: Path, monkeypatch
) -> None:
    """Ray Train loses a worker process mid-training (os._exit in rank 1 after the checkpoint
    at 16 images); FailureConfig restarts the group from that checkpoint."""
    marker = tmp_path / "died"
    monkeypatch.setenv(FAULT_ENV, f"{marker}:16")
    cfg = gan_config(tiles_32, tmp_path / "fault", max_failures=1)
    meta = run_train_gan(cfg)
    assert marker.is_file()  # the worker did die
    assert meta["kimg"] == pytest.approx(0.032)  # exactly the target, not more
    out = cfg.workdir / "gan"
    resumes = [json.loads(r) for r in (out / RESUMES_FILE).read_text().splitlines()]
    assert [(r["nimg"], r["ticks"]) for r in resumes] == [(16, 1)]  # restarted once, at 16
    # Images seen continue from the checkpoint: every tick once, none lost or repeated.
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert metrics["kimg"].tolist() == pytest.approx([0.016, 0.032])
    ckpts = [c for c in (out / "ray" / "train").glob("checkpoint_*") if c.is_dir()]
    assert sorted(load_state(c)["train"]["cur_nimg"] for c in ckpts) == [16, 32]
    assert {_mode(c) for c in ckpts} == {_plain_dir_mode(tmp_path)}  # group-readable
    same_generator(full_run.workdir / "gan", out, "after a worker was killed")


def test_tile_batches_read_the_planned_tiles_and_resume(tiles_32: Path) -> None:
    store = TileStore(tiles_32)
    manifest = store.read_manifest()
    kw = {"seed": 1, "dihedral_aug": False, "block_tiles": 8, "window_blocks": 2}
    stream = TileBatches(store, manifest, 8, **kw)
    got = [next(stream) for _ in range(5)]
    plan = stream._epoch(0)
    for i, batch in enumerate(got):
        rows = manifest.iloc[plan.rows[i * 8 : (i + 1) * 8]]
        direct = np.stack(
            [store.read_tiles(str(r.slide_id), np.array([r.index]))[0] for r in rows.itertuples()]
        )
        np.testing.assert_array_equal(batch.numpy(), direct)
    resumed = TileBatches(store, manifest, 8, cursor=DataCursor(0, 3), **kw)
    np.testing.assert_array_equal(next(resumed).numpy(), got[3].numpy())


def test_bad_inputs(tiles_32: Path, tmp_path: Path) -> None:
    with pytest.raises(GanInputError, match="no tiles"):
        run_train_gan(config_from_dict({"cohort": "x", "workdir": str(tmp_path / "empty")}))
    with pytest.raises(GanInputError, match="tiles are 32 px but preset tiny64 is 64 px"):
        run_train_gan(gan_config(tiles_32, tmp_path / "res", preset="tiny64"))
    with pytest.raises(GanInputError, match="checkpoint_res 24 is not one of preset tiny32"):
        run_train_gan(gan_config(tiles_32, tmp_path / "ck", preset="tiny32", checkpoint_res=24))
    with pytest.raises(GanInputError, match="fp16_res 4 is not one of preset tiny32"):
        run_train_gan(gan_config(tiles_32, tmp_path / "fp", preset="tiny32", fp16_res=4))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "generator.json").write_text("{}")
    (broken / "generator.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_generator(broken)
    with pytest.raises(CheckpointError, match="no exported generator"):
        load_generator(tmp_path)


def test_local_mode_without_ray(tiles_32: Path, tmp_path: Path) -> None:
    """``train-gan --local``: same loop in this process; a stopped run resumes exactly."""
    full = gan_config(tiles_32, tmp_path / "lfull", num_workers=1, cpus_per_worker=1)
    assert run_train_gan(full, local=True)["kimg"] == pytest.approx(0.032)
    ckpts = sorted((full.workdir / "gan" / "ray" / "local").glob("checkpoint_*"))
    assert [p.name for p in ckpts] == ["checkpoint_000000000016", "checkpoint_000000000032"]
    assert {_mode(c) for c in ckpts} == {_plain_dir_mode(tmp_path)}, "only its owner reads it"

    # The best snapshot: the tick and generator (G_ema or the raw G) with the lowest
    # snapshot_score, exportable on its own.
    rows = pd.read_parquet(full.workdir / "gan" / "metrics.parquet").to_dict(orient="records")
    assert all(np.isfinite(r["raw_swd"]) and "raw_nuclei_density_z" in r for r in rows)
    found = {r["kimg"]: best_net(r) for r in rows}
    best_kimg = min(found, key=lambda k: found[k][0])
    best_meta = json.loads((full.workdir / "gan" / BEST_DIR / "generator.json").read_text())
    assert best_meta["kimg"] == pytest.approx(best_kimg)
    assert best_meta["snapshot_score"] == pytest.approx(list(found[best_kimg][0]))
    assert best_meta["net"] == found[best_kimg][1]
    ckpt = load_state(ckpts[[0.016, 0.032].index(round(best_kimg, 3))])["train"]
    for k, v in load_weights(full.workdir / "gan" / BEST_DIR / "generator.safetensors").items():
        torch.testing.assert_close(v, ckpt[best_meta["net"]][k])
    best_cfg = config_from_dict({**full.dump(), "gan": {**full.dump()["gan"], "export": "best"}})
    assert export_best(best_cfg, tmp_path / "best_out")["kimg"] == pytest.approx(best_kimg)
    upto = [r["kimg"] for r in rows].index(best_kimg) + 1  # the snapshot's metrics: to its tick
    assert len(pd.read_parquet(tmp_path / "best_out" / "metrics.parquet")) == upto
    load_generator(tmp_path / "best_out")
    # gan.export: best writes the best snapshot to workdir/gan, with the whole run's metrics.
    assert run_train_gan(best_cfg, local=True)["kimg"] == pytest.approx(best_kimg)
    assert len(pd.read_parquet(full.workdir / "gan" / "metrics.parquet")) == len(rows)

    part = gan_config(tiles_32, tmp_path / "lpart", num_workers=1, cpus_per_worker=1)
    cfg_file = tmp_path / "part.yaml"
    cfg_file.write_text(f"cohort: x\nworkdir: {part.workdir}\n")
    sets = [
        "--set",
        "gan.preset=tiny32",
        "--set",
        "gan.batch_size=8",
        "--set",
        "gan.tick_kimg=0.016",
        "--set",
        "gan.metric_images=32",
        "--set",
        "gan.cpus_per_worker=1",
        "--set",
        "gan.keep_checkpoints=1",
    ]
    args = ["train-gan", str(cfg_file), "--local", *sets]
    assert main([*args, "--set", "gan.total_kimg=0.016"]) == 0
    assert main([*args, "--set", "gan.total_kimg=0.032"]) == 0
    kept = sorted((part.workdir / "gan" / "ray" / "local").glob("checkpoint_*"))
    assert [p.name for p in kept] == ["checkpoint_000000000032"]  # gan.keep_checkpoints
    metrics = pd.read_parquet(part.workdir / "gan" / "metrics.parquet")
    assert metrics["kimg"].tolist() == pytest.approx([0.016, 0.032])
    a = load_state(ckpts[-1])["train"]
    b = load_state(part.workdir / "gan" / "ray" / "local" / ckpts[-1].name)["train"]
    for net in ("G", "G_ema", "D"):
        for name, pa in a[net].items():
            torch.testing.assert_close(pa, b[net][name], msg=f"{net}.{name} differs after a resume")


def _mapping_moved(cfg: Config) -> float:
    """Largest relative change of the raw G's mapping weights from their seeded start, at the
    run's last checkpoint."""
    spec = load_generator(cfg.workdir / "gan").G.spec
    torch.manual_seed(cfg.gan.seed)  # as TrainState.create
    start = Generator(spec).mapping.state_dict()
    trained = load_state(latest_checkpoint(cfg))["train"]["G"]
    return max(
        float((trained[f"mapping.{k}"] - v).norm() / v.norm())
        for k, v in start.items()
        if k.endswith("weight")
    )


def test_mapping_lr_mult_lets_the_mapping_learn(
    tiles_32: Path, full_run: Config, tmp_path: Path
) -> None:
    """``gan.mapping_lr_mult`` overrides the preset's 0.01, is saved with the architecture, and
    the mapping network then moves ~100x more (here in half the steps)."""
    fast = gan_config(
        tiles_32,
        tmp_path / "fast",
        num_workers=1,
        cpus_per_worker=1,
        total_kimg=0.016,
        mapping_lr_mult=1.0,
    )
    run_train_gan(fast, local=True)
    fast_spec = load_generator(fast.workdir / "gan").G.spec
    assert fast_spec.mapping_lr_mult == 1.0
    assert load_generator(full_run.workdir / "gan").G.spec.mapping_lr_mult == 0.01
    slow_moved, fast_moved = _mapping_moved(full_run), _mapping_moved(fast)
    assert 0 < slow_moved < 1e-3 and fast_moved > 20 * slow_moved, (slow_moved, fast_moved)


def test_keep_checkpoints_none_keeps_every_tick(tmp_path: Path) -> None:
    """``gan.keep_checkpoints: null`` keeps every tick (to pick a snapshot after the run)."""
    tick = tmp_path / "tick"
    tick.mkdir()
    (tick / "state.pt").write_bytes(b"x")
    root = tmp_path / "local"
    for nimg in (16, 32, 48):
        _keep_local_checkpoint(tick, root, nimg, keep=None)
    assert len(list(root.glob("checkpoint_*"))) == 3
    _keep_local_checkpoint(tick, root, 64, keep=2)
    assert sorted(p.name for p in root.glob("checkpoint_*")) == [
        "checkpoint_000000000048",
        "checkpoint_000000000064",
    ]
    assert (root / "checkpoint_000000000064" / "state.pt").read_bytes() == b"x"


def test_mixed_precision_is_for_gpus_and_the_presets_default() -> None:
    """gan.fp16_res: paper256 on CUDA defaults to its four finest resolutions, the CPU
    presets to float32; an explicit value wins on CUDA; a CPU worker trains in float32."""
    paper, tiny = GanTrainConfig(preset="paper256"), GanTrainConfig(preset="tiny64")
    assert step_config(paper, 1, "cuda").fp16_res == 32
    assert step_config(tiny, 1, "cuda").fp16_res == 0
    assert step_config(paper.model_copy(update={"fp16_res": 0}), 1, "cuda").fp16_res == 0
    assert step_config(tiny.model_copy(update={"fp16_res": 16}), 1, "cuda").fp16_res == 16
    assert step_config(paper.model_copy(update={"fp16_res": 64}), 1, "cpu").fp16_res == 0


def test_step_config_carries_the_regularisers() -> None:
    """The gan section's regulariser settings reach the training step (a dropped one would
    silently train without it), and the batch is split over the workers."""
    g = GanTrainConfig(
        batch_size=64,
        pl_weight=2.0,
        r1_gamma=1.0,
        r1_interval=8,
        spread_weight=0.5,
        spread_band=(0.5, 1.5),
    )
    s = step_config(g, world_size=2, device="cpu")
    assert (s.spread_weight, s.spread_low, s.spread_high) == (0.5, 0.5, 1.5)
    assert (s.batch_size, s.pl_weight, s.r1_gamma, s.r1_interval) == (32, 2.0, 1.0, 8)


def test_cli_imports_without_ray() -> None:
    """``--local`` training (e.g. on a GPU box without Ray) must not need Ray importable."""
    code = (
        "import sys; sys.modules['ray'] = None; import tasks.cli, tasks.train_gan; "
        "tasks.cli.build_parser()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_gan_quality_command_writes_the_bar(full_run: Config, tmp_path: Path) -> None:
    """``stylepath gan-quality``: every feature check, layout and SWD into quality.json beside
    the generator, and the reals-vs-samples image; a 32-image generator fails the bar."""
    out = full_run.workdir / "gan"
    cfg_file = tmp_path / "q.yaml"
    cfg_file.write_text(f"cohort: x\nworkdir: {full_run.workdir}\ngan:\n  preset: tiny32\n")
    assert main(["gan-quality", str(cfg_file), "--n", "32"]) == 0
    q = json.loads((out / "quality.json").read_text())
    assert q["passed"] is False and q["kimg"] == pytest.approx(0.032)
    assert {"nuclei_density", "sharpness", "nuclear_solidity", "mean_R", "layout_corr"} <= set(
        q["checks"]
    )
    assert not all(c["passed"] for c in q["checks"].values())
    lin = q["checks"]["w_linearity"]  # the features against the samples' w
    assert np.isfinite(lin["median_r2"]) and set(lin["r2"]) == set(feature_names("histology"))
    assert lin["min_median_r2"] == LINEARITY_MIN
    spread = q["checks"]["w_spread"]  # the same samples' spread at constant noise
    assert set(spread["sd_ratio"]) == set(lin["r2"]) and np.isfinite(spread["median_sd_ratio"])
    assert np.isfinite(q["swd"]["mean"])
    with Image.open(out / "quality_reals_vs_samples.png") as im:
        assert im.size == (2 * 8 * 32, 4 * 32)  # 32 tiles | 32 samples, 8 a row
