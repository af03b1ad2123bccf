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
import uuid
from typing import Any

import numpy as np
import zarr

from pipeline.io.files import atomic_write_json, replace_dir
from pipeline.io.paths import WorkPath, as_path, is_remote, remove_file, remove_tree, zarr_store


class HeatmapStore:
    """Per-tile heatmaps (one zarr array per method and slide) under ``root``."""

    def __init__(self, root: str | WorkPath) -> None:
        self.root = as_path(root)
        self.zarr_path = self.root / "heatmaps.zarr"
        self.meta_path = self.root / "heatmaps.json"

    # -- writing (into a staging store, then ``commit``) -----------------------------------------
    @classmethod
    def staging(cls, final_root: str | WorkPath) -> HeatmapStore:
        """An empty store beside ``final_root``, to be committed onto it."""
        final_root = as_path(final_root)
        path = final_root.with_name(f".{final_root.name}.staging-{uuid.uuid4().hex[:12]}")
        store = cls(path)
        zarr.open_group(zarr_store(store.zarr_path), mode="w", zarr_format=3)
        return store

    def write(self, method: str, slide_id: str, maps: np.ndarray) -> None:
        """All maps of one slide (``[N, g, g]``), stored float16, 256 tiles per chunk."""
        maps = np.asarray(maps, dtype=np.float16)
        chunk = (max(1, min(256, len(maps))), *maps.shape[1:])
        arr = zarr.create_array(
            zarr_store(self.zarr_path / method / slide_id),
            shape=maps.shape,
            chunks=chunk,
            dtype="float16",
            zarr_format=3,
            dimension_names=("tile", "y", "x"),
        )
        if len(maps):
            arr[:] = maps

    def commit(self, final_root: str | WorkPath, meta: dict[str, Any]) -> HeatmapStore:
        """Write the metadata and move this staging store onto ``final_root``.

        On object storage the metadata is written after the copy (it is the commit mark).
        """
        final = HeatmapStore(final_root)
        if is_remote(final.root):
            remove_file(final.meta_path)
            replace_dir(self.root, final.root)
            atomic_write_json(final.meta_path, meta)
            return final
        atomic_write_json(self.meta_path, meta)
        replace_dir(self.root, final.root)
        return final

    def discard(self) -> None:
        remove_tree(self.root)

    # -- reading ---------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.meta_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def methods(self) -> list[str]:
        meta = self.meta()
        return list(meta["methods"]) if meta else []

    def read(
        self, method: str, slide_id: str, indices: np.ndarray | slice | None = None
    ) -> np.ndarray:
        """float32 maps of one slide's tiles (all, a slice or an index array): ``[n, g, g]``."""
        arr = zarr.open_array(
            zarr_store(self.zarr_path / method / slide_id, read_only=True), mode="r"
        )
        if indices is None:
            return arr[:].astype(np.float32)
        if isinstance(indices, slice):
            return arr[indices].astype(np.float32)
        return arr[:][np.asarray(indices, dtype=np.int64)].astype(np.float32)

    @staticmethod
    def clear_stale(final_root: str | WorkPath) -> None:
        """Drop staging folders left by killed runs (call under the workdir lock)."""
        final_root = as_path(final_root)
        for p in final_root.parent.glob(f".{final_root.name}.staging-*"):
            remove_tree(p)
