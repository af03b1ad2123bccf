"""The tiling stage on a real local Ray, real TIFF/SVS files, real zarr and parquet."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import Config, config_from_dict
from pipeline.io.tile_store import TileStore
from pipeline.slides import open_slide, read_tile
from pipeline.tiling import plan_slide
from tasks.cli import EXIT_FATAL, EXIT_OK, EXIT_PARTIAL, main
from tasks.tile import run_tiling, split_parts

from conftest import PYRAMID_TIF, SHARED_DATA, SVS, TILES_DIR


def make_config(tmp_path: Path, cohort: Path, **tiling) -> Config:
    return config_from_dict(
        {
            "cohort": str(cohort),
            "workdir": str(tmp_path / "work"),
            "tiling": {"mpp": 1.0, "size": 64, "min_tissue": 0.5, **tiling},
            "storage": {"tiles_per_chunk": 1, "tiles_per_shard": 16},
            "ray": {"tiles_per_task": 16},
        }
    )


def write_cohort(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def snapshot(store: TileStore) -> dict[str, int]:
    files = [p for p in store.root.rglob("*") if p.is_file() and p.name != ".lock"]
    return {str(p.relative_to(store.root)): p.stat().st_mtime_ns for p in files}


def test_split_parts_are_shard_aligned() -> None:
    assert split_parts(100, 48, 16) == [(0, 48), (48, 96), (96, 100)]
    assert split_parts(10, 5, 16) == [(0, 10)]
    assert split_parts(0, 48, 16) == []


def test_tile_cohort_then_rerun_does_nothing(tmp_path: Path, make_slide, ray_local) -> None:
    blank = np.full((512, 512, 3), 241, dtype=np.uint8)
    cohort = write_cohort(
        tmp_path / "cohort" / "cohort.csv",
        [
            {
                "slide_id": "fine",
                "path": str(make_slide("fine", mpp=0.25, size=2048)),
                "label": "tumor",
                "center": "A",
            },
            {
                "slide_id": "generic",
                "path": str(make_slide("generic", vendor="generic")),
                "label": "normal",
                "center": "B",
            },
            {
                "slide_id": "blank",
                "path": str(make_slide("blank", blank)),
                "label": "normal",
                "center": "B",
            },
            {"slide_id": "svs", "path": str(SVS), "label": "tumor", "center": "A"},
            {
                "slide_id": "png",
                "path": str(TILES_DIR / "tiatoolbox_target_image.png"),
                "label": "tumor",
                "center": "C",
                "mpp": 0.5,
            },
        ],
    )
    cfg = make_config(tmp_path, cohort)
    summary = run_tiling(cfg)
    assert (summary.n_ok, summary.n_failed, summary.n_skipped) == (5, 0, 0)

    store = TileStore(cfg.workdir / "tiles")
    slides = store.read_slides().set_index("slide_id")
    tiles = store.read_manifest()
    assert slides["status"].eq("ok").all()
    assert slides.loc["blank", "n_tiles"] == 0 and slides.loc["blank", "note"] == "no tissue"
    assert slides.loc["svs", "vendor"] == "aperio" and slides.loc["svs", "mpp"] == 0.499
    assert slides.loc["png", "mpp_source"] == "cohort"
    assert slides.loc["fine", "level"] == 2  # 0.25 µm/px slide read from its 4x level
    assert summary.n_tiles == len(tiles) == slides["n_tiles"].sum()
    assert tiles["tile_id"].is_unique
    assert {"label", "center"} <= set(tiles.columns) and "path" not in tiles.columns
    assert (tiles["tissue_fraction"] >= 0.5).all()
    for sid, group in tiles.groupby("slide_id"):
        arr = store.array(sid)
        assert arr.shape == (len(group), 64, 64, 3)
        assert group["index"].tolist() == list(range(len(group)))
    assert store.array("blank").shape[0] == 0

    # Stored pixels are the pixels read straight from the slide (multi-part slides included).
    row = tiles[tiles.slide_id == "fine"].iloc[-1]
    slide = open_slide(cohort.parent.parent / "slides" / "fine.tif")
    plan = plan_slide(slide, "fine", "fine.tif", None, cfg.tiling)
    assert plan.n_tiles > 16  # spans more than one read task
    np.testing.assert_array_equal(
        store.read_tiles("fine", [int(row["index"])])[0],
        read_tile(slide, plan.grid, int(row["x"]), int(row["y"])),
    )
    order = [5, 0, 5, 3, 4]  # any order, repeats allowed
    picked = store.read_tiles("fine", order)
    every = store.read_tiles("fine")
    np.testing.assert_array_equal(picked, every[order])
    with pytest.raises(IndexError, match="out of range"):
        store.read_tiles("fine", [plan.n_tiles])
    assert (cfg.workdir / "config.yaml").is_file()
    assert not list(store.staging_dir.iterdir())

    # Same command again: no tiling work and not one file rewritten.
    before = snapshot(store)
    again = run_tiling(cfg)
    assert (again.n_skipped, again.n_tiles_read, again.n_tiles) == (5, 0, summary.n_tiles)
    assert snapshot(store) == before

    # A changed file re-tiles that slide only; a changed tiling config re-tiles everything.
    png_copy = tmp_path / "cohort" / "p.png"
    shutil.copy(TILES_DIR / "tiatoolbox_target_image.png", png_copy)
    df = pd.read_csv(cohort)
    df.loc[df.slide_id == "png", "path"] = "p.png"
    df.to_csv(cohort, index=False)
    third = run_tiling(cfg)
    assert third.n_skipped == 4 and third.n_tiles_read == slides.loc["png", "n_tiles"]
    pd.testing.assert_frame_equal(store.read_manifest(), tiles)

    fourth = run_tiling(make_config(tmp_path, cohort, min_tissue=0.9))
    assert fourth.n_skipped == 0 and fourth.n_ok == 5
    assert 0 < fourth.n_tiles < summary.n_tiles


def test_bad_slides_are_recorded_and_the_rest_completes(
    tmp_path: Path, make_slide, ray_local, capsys
) -> None:
    slides_dir = tmp_path / "cohort"
    slides_dir.mkdir()
    good = make_slide("good")
    truncated = slides_dir / "truncated.svs"
    truncated.write_bytes(SVS.read_bytes()[: SVS.stat().st_size // 2])
    text = slides_dir / "notes.svs"
    text.write_text("this is a text file, not a slide\n")
    no_mpp = make_slide("nompp", mpp=None, vendor="generic")
    rows = [
        {"slide_id": "good", "path": str(good)},
        {"slide_id": "truncated", "path": "truncated.svs"},
        {"slide_id": "text", "path": "notes.svs"},
        {"slide_id": "missing", "path": "gone/missing.svs"},
        {"slide_id": "dicom", "path": str(SHARED_DATA / "radiology" / "CT_small.dcm")},
        {"slide_id": "nompp", "path": str(no_mpp)},
    ]
    cohort = write_cohort(slides_dir / "cohort.csv", rows)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text("tiling:\n  mpp: 1.0\n  size: 64\n")
    argv = [
        "tile",
        str(cfg_path),
        "--set",
        f"cohort={cohort}",
        "--set",
        f"workdir={tmp_path / 'work'}",
    ]
    assert main(argv) == EXIT_PARTIAL
    err = capsys.readouterr().err
    assert "failed truncated" in err and "failed missing" in err

    slides = TileStore(tmp_path / "work" / "tiles").read_slides().set_index("slide_id")
    assert slides.loc["good", "status"] == "ok" and slides.loc["good", "n_tiles"] > 0
    failed = slides[slides.status == "failed"]
    assert sorted(failed.index) == ["dicom", "missing", "nompp", "text", "truncated"]
    assert "file not found" in failed.loc["missing", "error"]
    assert "unsupported" in failed.loc["text", "error"]
    assert "unsupported" in failed.loc["dicom", "error"]
    assert "no MPP" in failed.loc["nompp", "error"]
    assert str(truncated) in failed.loc["truncated", "error"]
    tiles = pd.read_parquet(tmp_path / "work" / "tiles" / "tiles.parquet")
    assert set(tiles["slide_id"]) == {"good"}

    # Unchanged bad files are not retried; the exit code still reports them.
    assert main(argv) == EXIT_PARTIAL
    assert "0 read now" in capsys.readouterr().out

    # Fatal errors stop before any work.
    assert (
        main(
            [
                "tile",
                str(cfg_path),
                "--set",
                f"cohort={tmp_path}/none.csv",
                "--set",
                f"workdir={tmp_path / 'w2'}",
            ]
        )
        == EXIT_FATAL
    )
    assert main(argv + ["--set", "tiling.size=huge"]) == EXIT_FATAL
    assert "tiling.size" in capsys.readouterr().err
    assert not (tmp_path / "w2").exists()
    good_only = write_cohort(tmp_path / "ok.csv", rows[:1])
    assert main(argv + ["--set", f"cohort={good_only}"]) == EXIT_OK


@pytest.mark.skipif(os.name != "posix", reason="process groups")
def test_killed_run_resumes_without_duplicates(tmp_path: Path, make_slide, ray_local) -> None:
    import signal
    import subprocess
    import sys
    import time

    rows = [
        {"slide_id": f"s{i}", "path": str(make_slide(f"s{i}", mpp=0.25 + 0.05 * i, size=1536))}
        for i in range(6)
    ]
    cohort = write_cohort(tmp_path / "cohort.csv", rows)
    cfg = make_config(tmp_path, cohort)
    store = TileStore(cfg.workdir / "tiles")
    cfg_path = tmp_path / "cfg.yaml"
    import yaml

    dumped = cfg.dump()
    dumped["ray"]["num_cpus"] = 1  # one slide at a time, so the kill lands mid-cohort
    ray_tmp = tempfile.mkdtemp(prefix="sp-ray-", dir="/tmp")  # AF_UNIX paths are short
    dumped["ray"]["temp_dir"] = ray_tmp
    cfg_path.write_text(yaml.safe_dump(dumped))
    log = tmp_path / "killed.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tasks.cli", "tile", str(cfg_path)],
            start_new_session=True,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if len(list(store.parts_dir.glob("*.json"))) >= 2:
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    shutil.rmtree(ray_tmp, ignore_errors=True)
    done_before = len(list(store.parts_dir.glob("*.json")))
    assert 2 <= done_before < 6, f"the kill should land mid-cohort: {log.read_text()[-2000:]}"
    assert not store.tiles_manifest.exists()

    resumed = run_tiling(cfg)
    assert resumed.n_skipped >= done_before and resumed.n_ok == 6

    clean_cfg = make_config(tmp_path / "clean", cohort)
    run_tiling(clean_cfg)
    clean = TileStore(clean_cfg.workdir / "tiles")
    pd.testing.assert_frame_equal(store.read_manifest(), clean.read_manifest())
    for sid in ("s0", "s5"):
        np.testing.assert_array_equal(store.read_tiles(sid), clean.read_tiles(sid))


def test_shared_images_and_generic_pyramid_tiff(tmp_path: Path, ray_local) -> None:
    rows = [{"slide_id": p.stem, "path": str(p), "mpp": 0.5} for p in sorted(TILES_DIR.iterdir())]
    rows.append({"slide_id": "pyramid", "path": str(PYRAMID_TIF), "mpp": None})
    rows.append(
        {
            "slide_id": "xray",
            "path": str(SHARED_DATA / "radiology" / "cxr_nih_00000001_000.png"),
            "mpp": 0.5,
        }
    )
    cohort = write_cohort(tmp_path / "cohort.csv", rows)
    cfg = make_config(tmp_path, cohort, mpp=0.5)
    summary = run_tiling(cfg)
    assert summary.n_ok == len(rows) and summary.n_failed == 0
    slides = TileStore(cfg.workdir / "tiles").read_slides().set_index("slide_id")
    assert (slides.drop(index="xray")["n_tiles"] > 0).all()
    assert slides.loc["xray", "note"] == "no tissue"  # greyscale: no stain saturation
    assert slides.loc["pyramid", "vendor"] == "generic-tiff"
    assert slides.loc["pyramid", "mpp_source"] == "file"
