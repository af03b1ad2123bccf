"""Copy a random subset of a workdir's tiles (same share from every slide) into a new tile
store, e.g. to carry a cohort's tiles to a GPU machine with no shared storage.

    python scripts/tile_subset.py work/demo/tiles gpu/tiles --n 4096 --codec zstd --clevel 19
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import StorageConfig
from pipeline.io.tile_store import TileStore


def tile_subset(src: Path, dst: Path, n: int, storage: StorageConfig, seed: int = 0) -> int:
    """Write about ``n`` tiles of ``src`` into a new store at ``dst``; returns the count."""
    source, target = TileStore(src), TileStore(dst)
    manifest = source.read_manifest()
    share = min(1.0, n / len(manifest))
    rng = np.random.default_rng(seed)
    target.ensure()
    parts = []
    for sid, rows in manifest.groupby("slide_id", sort=True):
        keep = np.sort(rng.choice(len(rows), max(1, round(share * len(rows))), replace=False))
        rows = rows.iloc[keep].copy()
        tiles = source.read_tiles(str(sid), rows["index"].to_numpy())
        staging = target.create_staging(str(sid), len(rows), tiles.shape[1], storage)
        target.write_tiles(staging, 0, tiles)
        rows["index"] = np.arange(len(rows))
        record = {**(source.record(str(sid)) or {}), "n_tiles": len(rows), "subset_of": str(src)}
        target.commit_ok(str(sid), staging, rows, record)
        parts.append(rows)

    tiles = pd.concat(parts, ignore_index=True)
    target.write_manifests(tiles, source.read_slides())
    return len(tiles)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, help="tile store folder (workdir/tiles)")
    ap.add_argument("dst", type=Path, help="new tile store folder")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--codec", default="zstd", choices=["lz4", "zstd", "none"])
    ap.add_argument("--clevel", type=int, default=19)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=64, help="tiles per zarr chunk")
    args = ap.parse_args()
    storage = StorageConfig(
        codec=args.codec, clevel=args.clevel, tiles_per_chunk=args.chunk, tiles_per_shard=256
    )
    count = tile_subset(args.src, args.dst, args.n, storage, args.seed)
    print(f"{count} tiles -> {args.dst}")


if __name__ == "__main__":
    main()
