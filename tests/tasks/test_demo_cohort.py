"""make-cohort on Ray, then tiling: the planted factors survive into the tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import config_from_dict
from pipeline.io.tile_store import TileStore
from tasks.cli import EXIT_OK, main
from tasks.tile import run_tiling


def test_make_cohort_then_tile(tmp_path: Path, ray_local, capsys) -> None:
    out = tmp_path / "demo"
    args = ["make-cohort", str(out), "--slides", "4", "--seed", "5", "--size-um", "512"]
    assert main(args) == EXIT_OK
    cohort = pd.read_csv(out / "cohort.csv")
    assert list(cohort.columns[:5]) == ["slide_id", "label", "center", "scanner", "patient"]
    assert "mpp" not in cohort.columns  # the slides carry their own MPP
    first = {p: (out / p).stat().st_mtime_ns for p in cohort["path"]}
    assert main(args) == EXIT_OK  # same parameters: nothing re-rendered
    assert {p: (out / p).stat().st_mtime_ns for p in cohort["path"]} == first

    cfg = config_from_dict(
        {
            "cohort": str(out / "cohort.csv"),
            "workdir": str(tmp_path / "work"),
            "tiling": {"mpp": 1.0, "size": 64, "min_tissue": 0.5},
        }
    )
    summary = run_tiling(cfg)
    assert summary.n_ok == 4 and summary.n_tiles > 4 * 20
    store = TileStore(cfg.workdir / "tiles")
    slides = store.read_slides()
    assert (slides["vendor"] == "aperio").all() and (slides["mpp"] == 0.5).all()
    assert (slides["level"] == 1).all()  # 1 µm/px tiles come from the 2x level
    tiles = store.read_manifest()
    assert {"label", "center", "nuclei_per_mm2"} <= set(tiles.columns)

    # Known answer: centre colour (median R−B of tissue pixels) separates the centers.
    def red_minus_blue(sid: str) -> np.ndarray:
        px = store.read_tiles(sid).reshape(-1, 3).astype(float)
        px = px[px.min(axis=1) < 225]
        return np.median(px[:, 0] - px[:, 2])

    colour = {r.slide_id: red_minus_blue(r.slide_id) for r in cohort.itertuples()}
    a = [colour[s] for s in cohort.loc[cohort.center == "A", "slide_id"]]
    b = [colour[s] for s in cohort.loc[cohort.center == "B", "slide_id"]]
    assert min(a) > max(b) + 8, colour
