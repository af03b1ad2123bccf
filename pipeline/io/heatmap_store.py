"""The heatmaps folder of a workdir — the only code that knows its layout.

```
workdir/heatmaps/
  heatmaps.zarr/<method>/<slide_id>   float16 [N, g, g], row i = tile i of the tile store's slide
  heatmaps.json                       methods, grid, explained class, fingerprint
```
A run writes a staging folder and moves it into place with one rename, so readers see either
the previous complete set or the new one.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from pipeline.io.files import atomic_write_json, replace_dir


class HeatmapStore:
    """Per-tile heatmaps (one zarr array per method and slide) under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.zarr_path = self.root / "heatmaps.zarr"
        self.meta_path = self.root / "heatmaps.json"

    # -- writing (into a staging store, then ``commit``) -----------------------------------------
    @classmethod
    def staging(cls, final_root: str | Path) -> HeatmapStore:
        """An empty store beside ``final_root``, to be committed onto it."""
        final_root = Path(final_root)
        path = final_root.with_name(f".{final_root.name}.staging-{uuid.uuid4().hex[:12]}")
        store = cls(path)
        zarr.open_group(str(store.zarr_path), mode="w", zarr_format=3)
        return store

    def write(self, method: str, slide_id: str, maps: np.ndarray) -> None:
        """All maps of one slide (``[N, g, g]``), stored float16, 256 tiles per chunk."""
        maps = np.asarray(maps, dtype=np.float16)
        chunk = (max(1, min(256, len(maps))), *maps.shape[1:])
        arr = zarr.create_array(str(self.zarr_path / method / slide_id), shape=maps.shape,
                                chunks=chunk, dtype="float16", zarr_format=3,
                                dimension_names=("tile", "y", "x"))  # fmt: skip
        if len(maps):
            arr[:] = maps

    def commit(self, final_root: str | Path, meta: dict[str, Any]) -> HeatmapStore:
        """Write the metadata and move this staging store onto ``final_root``."""
        atomic_write_json(self.meta_path, meta)
        replace_dir(self.root, Path(final_root))
        return HeatmapStore(final_root)

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # -- reading ---------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.meta_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def methods(self) -> list[str]:
        meta = self.meta()
        return list(meta["methods"]) if meta else []

    def read(self, method: str, slide_id: str,
             indices: np.ndarray | slice | None = None) -> np.ndarray:  # fmt: skip
        """float32 maps of one slide's tiles (all, a slice or an index array): ``[n, g, g]``."""
        arr = zarr.open_array(str(self.zarr_path / method / slide_id), mode="r")
        if indices is None:
            return arr[:].astype(np.float32)
        if isinstance(indices, slice):
            return arr[indices].astype(np.float32)
        return arr[:][np.asarray(indices, dtype=np.int64)].astype(np.float32)

    @staticmethod
    def clear_stale(final_root: str | Path) -> None:
        """Drop staging folders left by killed runs (call under the workdir lock)."""
        final_root = Path(final_root)
        for p in final_root.parent.glob(f".{final_root.name}.staging-*"):
            shutil.rmtree(p, ignore_errors=True)
