"""The tiles folder of a workdir — the only code that knows its layout.

```
workdir/tiles/
  tiles.zarr/<slide_id>     uint8 [N, H, W, C] per slide (C = 3 RGB histology, 1 grey radiology;
                            zarr v3, chunked by tile, sharded)
  parts/<slide_id>.parquet  the slide's tile rows        (written after its array)
  parts/<slide_id>.json     the slide's record + fingerprint (written last: the commit mark)
  tiles.parquet             all tiles of the cohort, with the cohort's metadata
  slides.parquet            one row per cohort slide: status, error, n_tiles, mpp, …
  .staging/                 arrays being written (moved into tiles.zarr when complete)
```
A slide's tiles appear in ``tiles.zarr`` only complete (one rename), and count as done only
once its record exists, so a killed run leaves nothing half-visible. ``root`` may be a URL
(``s3://bucket/work/tiles``): the arrays are then zarr ``FsspecStore``s, the "rename" is a
server-side copy, and the record (one object, written last) is still the commit mark.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import numpy as np
import pandas as pd
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from pipeline.config import StorageConfig
from pipeline.io.files import atomic_write_json, replace_dir
from pipeline.io.parquet import read_parquet, write_parquet
from pipeline.io.paths import WorkPath, as_path, remove_file, remove_tree, zarr_store


def _compressors(storage: StorageConfig) -> tuple:
    if storage.codec == "lz4":
        return (BloscCodec(cname="lz4", clevel=min(storage.clevel, 9), shuffle="noshuffle"),)
    if storage.codec == "zstd":
        return (ZstdCodec(level=storage.clevel),)
    return ()


def _runs(indices: np.ndarray) -> list[tuple[int, int]]:
    """Sorted unique indices → ``[start, stop)`` runs of consecutive values."""
    if len(indices) == 0:
        return []
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(indices)]])
    return [(int(indices[a]), int(indices[b - 1]) + 1) for a, b in zip(starts, stops, strict=True)]


class TileStore:
    """Read and write the tile arrays, per-slide parts and cohort manifests under ``root``."""

    def __init__(self, root: str | WorkPath) -> None:
        self.root = as_path(root)
        self.zarr_path = self.root / "tiles.zarr"
        self.parts_dir = self.root / "parts"
        self.staging_dir = self.root / ".staging"
        self.tiles_manifest = self.root / "tiles.parquet"
        self.slides_manifest = self.root / "slides.parquet"

    # -- setup -------------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the folders and the zarr group if missing."""
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        if not (self.zarr_path / "zarr.json").exists():
            zarr.open_group(zarr_store(self.zarr_path), mode="a", zarr_format=3)

    def clear_staging(self) -> None:
        """Drop arrays left by a killed run (call only when no other run uses this workdir)."""
        remove_tree(self.staging_dir)
        self.staging_dir.mkdir(parents=True, exist_ok=True)

    # -- per-slide records ---------------------------------------------------------------------
    def _record_path(self, slide_id: str) -> WorkPath:
        return self.parts_dir / f"{slide_id}.json"

    def _rows_path(self, slide_id: str) -> WorkPath:
        return self.parts_dir / f"{slide_id}.parquet"

    def record(self, slide_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._record_path(slide_id).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def rows(self, slide_id: str) -> pd.DataFrame:
        return read_parquet(self._rows_path(slide_id))

    # -- writing a slide -----------------------------------------------------------------------
    def create_staging(
        self, slide_id: str, n_tiles: int, size: int, storage: StorageConfig, channels: int = 3
    ) -> WorkPath:
        """Create an empty staging array for a slide (``channels`` per pixel); returns its
        path."""
        path = self.staging_dir / f"{slide_id}-{uuid.uuid4().hex[:12]}"
        chunk = storage.tiles_per_chunk
        shard = storage.tiles_per_shard
        zarr.create_array(
            zarr_store(path),
            shape=(n_tiles, size, size, channels),
            chunks=(chunk, size, size, channels),
            shards=(shard, size, size, channels),
            dtype="uint8",
            compressors=_compressors(storage),
            dimension_names=("tile", "y", "x", "channel"),
            zarr_format=3,
        )
        return path

    @staticmethod
    def write_tiles(staging: str | WorkPath, start: int, tiles: np.ndarray) -> None:
        """Write tiles at ``start``; callers keep writes shard-aligned (safe across processes)."""
        arr = zarr.open_array(zarr_store(as_path(staging)), mode="r+")
        arr[start : start + len(tiles)] = tiles

    def commit_ok(
        self, slide_id: str, staging: str | WorkPath, rows: pd.DataFrame, record: dict[str, Any]
    ) -> None:
        """Publish a slide: array into the group, then rows, then the record (commit mark)."""
        remove_file(self._record_path(slide_id))
        replace_dir(as_path(staging), self.zarr_path / slide_id)
        write_parquet(rows, self._rows_path(slide_id))
        atomic_write_json(self._record_path(slide_id), record)

    def commit_failed(
        self, slide_id: str, record: dict[str, Any], staging: str | WorkPath | None
    ) -> None:
        """Record a failed slide and remove any tiles it had from an earlier run."""
        remove_file(self._record_path(slide_id))
        if staging:
            remove_tree(as_path(staging))
        remove_tree(self.zarr_path / slide_id)
        remove_file(self._rows_path(slide_id))
        atomic_write_json(self._record_path(slide_id), record)

    # -- manifests -----------------------------------------------------------------------------
    def write_manifests(self, tiles: pd.DataFrame, slides: pd.DataFrame) -> bool:
        """Write ``tiles.parquet`` and ``slides.parquet`` unless unchanged; True if written."""
        changed = False
        for df, path in ((tiles, self.tiles_manifest), (slides, self.slides_manifest)):
            if path.exists():
                old = read_parquet(path)
                if old.shape == df.shape and old.reset_index(drop=True).equals(
                    df.reset_index(drop=True)
                ):
                    continue
            write_parquet(df, path)
            changed = True
        return changed

    def read_manifest(self) -> pd.DataFrame:
        return read_parquet(self.tiles_manifest)

    def read_slides(self) -> pd.DataFrame:
        return read_parquet(self.slides_manifest)

    def slide_fingerprints(self) -> dict[str, str]:
        """Tiled (ok) slide id → the fingerprint its tiles were made with (file, MPP, tiling
        config, code): later stages keep per-slide results while it is unchanged."""
        if not self.slides_manifest.is_file():
            return {}
        s = self.read_slides()
        s = s[s["status"] == "ok"]
        return dict(zip(s["slide_id"].astype(str), s["fingerprint"].astype(str), strict=True))

    # -- reading tiles -------------------------------------------------------------------------
    def array(self, slide_id: str) -> zarr.Array:
        return zarr.open_array(zarr_store(self.zarr_path / slide_id, read_only=True), mode="r")

    def tile_shape(self, manifest: pd.DataFrame | None = None) -> tuple[int, int]:
        """(tile side in px, channels) of the cohort's tiles (its first slide with tiles)."""
        manifest = self.read_manifest() if manifest is None else manifest
        shape = self.array(str(manifest["slide_id"].iloc[0])).shape
        return int(shape[1]), int(shape[3])

    def read_tiles(self, slide_id: str, indices: np.ndarray | slice | None = None) -> np.ndarray:
        """Tiles of one slide (all, a slice, or an index array): uint8 [n, H, W, C]."""
        arr = self.array(slide_id)
        if indices is None:
            return arr[:]
        if isinstance(indices, slice):
            return arr[indices]
        # Read runs of consecutive tiles as slices (zarr 3.1's orthogonal selection on sharded
        # arrays is ~20x slower than this), then restore the requested order and repeats.
        wanted = np.asarray(indices, dtype=np.int64)
        unique, inverse = np.unique(wanted, return_inverse=True)
        if len(unique) and (unique[0] < 0 or unique[-1] >= arr.shape[0]):
            raise IndexError(f"tile index out of range for {slide_id} ({arr.shape[0]} tiles)")
        parts = [arr[a:b] for a, b in _runs(unique)]
        got = np.concatenate(parts) if parts else np.zeros((0, *arr.shape[1:]), arr.dtype)
        return got[inverse]
