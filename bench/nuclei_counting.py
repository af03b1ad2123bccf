"""How well the nuclei segmentation counts, against the nuclei the renderer planted; prints JSON.

For a sample of the demo workdir's stored tiles (``--per-slide`` per slide), the planted nuclei
with at least ``MIN_NUCLEUS_UM2`` of their area inside the tile (``planted_counts``) against
``segment_nuclei``'s count: mean counts, bias, mean absolute error and correlation. The GAN
quality bar and the ``nuclei_density`` feature both count with it (docs/gan.md).

    PYTHONPATH=. python bench/nuclei_counting.py [--workdir work/demo] [--per-slide 80]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.features.nuclei import MIN_NUCLEUS_UM2, nuclei_table
from pipeline.io.tile_store import TileStore
from pipeline.synthetic import planted_counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="work/demo")
    ap.add_argument("--per-slide", type=int, default=80)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    wd = Path(args.workdir)
    cohort = json.loads((wd / "cohort" / "cohort.json").read_text())
    specs = pd.read_csv(wd / "cohort" / "cohort.csv").set_index("slide_id")
    store = TileStore(wd / "tiles")
    manifest = store.read_manifest()
    t0 = time.perf_counter()
    counted, truth = [], []
    for sid, rows in manifest.groupby("slide_id"):
        rows = rows.sample(min(len(rows), args.per_slide), random_state=args.seed)
        spec = {**specs.loc[sid].to_dict(), "mpp": cohort["mpp"]}
        level0_um = float(cohort["mpp"])  # manifest x, y are level-0 pixels
        size_um = float(rows["mpp"].iloc[0]) * store.read_tiles(str(sid), [0]).shape[1]
        truth.append(
            planted_counts(
                spec,
                rows["x"].to_numpy() * level0_um,
                rows["y"].to_numpy() * level0_um,
                size_um,
                MIN_NUCLEUS_UM2,
            )
        )
        tiles = store.read_tiles(str(sid), rows["index"].to_numpy())
        counted.append(nuclei_table(tiles, float(rows["mpp"].iloc[0]))["nuclei_count"].to_numpy())
    c, t = np.concatenate(counted), np.concatenate(truth).astype(float)
    err = c - t
    print(
        json.dumps(
            {
                "tiles": len(c),
                "slides": len(counted),
                "tile_um": size_um,
                "planted_per_tile": round(float(t.mean()), 3),
                "counted_per_tile": round(float(c.mean()), 3),
                "bias": round(float(err.mean()), 3),
                "mae": round(float(np.abs(err).mean()), 3),
                "r": round(float(np.corrcoef(c, t)[0, 1]), 4),
                "seconds": round(time.perf_counter() - t0, 1),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
