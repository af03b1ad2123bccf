"""The inversion folder of a workdir — the only code that knows its layout.

```
workdir/inversion/
  encoder.safetensors + encoder.json   the cached encoder (json: spec, key, history; last)
  parts/fingerprint.json               what the parts were computed with (+ each slide's tiles)
  parts/<slide>-<first index>.npy      float32 latents [n, L, w_dim] of one batch
  parts/<slide>-<first index>.parquet  its rows (written after the .npy: the commit mark)
  inversion.parquet                    one row per selected tile (consolidated from parts)
  latents.zarr/{latents,tile_id}       float32 [n, L, w_dim] + str [n], row = latent_row
```
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import zarr

from pipeline.io.checkpoints import load_weights, save_weights
from pipeline.io.files import atomic_write, atomic_write_json, replace_dir, temp_sibling
from pipeline.io.parquet import read_parquet, write_parquet
from pipeline.io.paths import WorkPath, as_path, is_remote, remove_file, remove_tree, zarr_store


class InversionStore:
    """Encoder cache, per-batch parts and the consolidated outputs under ``root``."""

    def __init__(self, root: str | WorkPath) -> None:
        self.root = as_path(root)
        self.encoder_weights = self.root / "encoder.safetensors"
        self.encoder_meta = self.root / "encoder.json"
        self.parts_dir = self.root / "parts"
        self.table = self.root / "inversion.parquet"
        self.latents_path = self.root / "latents.zarr"

    # -- encoder cache ---------------------------------------------------------------------------
    def load_encoder(self, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """The cached encoder when its key matches, else None."""
        try:
            meta = json.loads(self.encoder_meta.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if meta.get("key") != key or not self.encoder_weights.is_file():
            return None
        return load_weights(self.encoder_weights), meta

    def save_encoder(self, weights: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        remove_file(self.encoder_meta)
        save_weights(self.encoder_weights, weights)
        atomic_write_json(self.encoder_meta, meta)

    # -- parts -----------------------------------------------------------------------------------
    def reset_parts(self, fingerprint: str, slides: dict[str, str] | None = None) -> bool:
        """Keep the parts if they were made with ``fingerprint``, else drop them; True if kept.

        ``slides`` (slide id → fingerprint of its tiles): parts of a slide whose fingerprint
        changed are dropped too; slides new to the map are added to it.
        """
        stamp = self.parts_dir / "fingerprint.json"
        try:
            old = json.loads(stamp.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            old = {}
        kept = old.get("fingerprint") == fingerprint
        if not kept:
            remove_tree(self.parts_dir)
            old = {}
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        known: dict[str, str] = dict(old.get("slides", {}))
        changed = {s for s, fp in (slides or {}).items() if s in known and known[s] != fp}
        if changed:
            remove_file(stamp)  # the map is rewritten once the stale parts are gone
            for name in self.part_names():
                if self._part_slide(name) in changed:
                    remove_file(self.parts_dir / f"{name}.parquet")
                    remove_file(self.parts_dir / f"{name}.npy")
        slides = slides or {}
        if not kept or changed or not slides.items() <= known.items():
            atomic_write_json(stamp, {"fingerprint": fingerprint, "slides": {**known, **slides}})
        return kept

    def _part_slide(self, name: str) -> str:
        return str(read_parquet(self.parts_dir / f"{name}.parquet")["slide_id"].iloc[0])

    def write_part(self, name: str, rows: pd.DataFrame, latents: np.ndarray) -> None:
        """Latents first, rows last (a part counts only once its rows exist)."""
        base = self.parts_dir / name
        arr = np.ascontiguousarray(latents, dtype=np.float32)

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # np.save(path) would append ".npy" to the temp name
                np.save(fh, arr)

        atomic_write(base.with_suffix(".npy"), save)
        write_parquet(rows, base.with_suffix(".parquet"))

    def part_names(self) -> list[str]:
        return sorted(
            p.stem
            for p in self.parts_dir.glob("*.parquet")
            if not p.name.startswith(".") and p.with_suffix(".npy").is_file()
        )

    def part_rows(self) -> list[tuple[str, pd.DataFrame]]:
        """(name, rows) of every committed part."""
        return [(n, read_parquet(self.parts_dir / f"{n}.parquet")) for n in self.part_names()]

    def finished_ids(self) -> set[str]:
        """Tile ids with a committed part."""
        done: set[str] = set()
        for _, rows in self.part_rows():
            done.update(rows["tile_id"].astype(str))
        return done

    def read_part(self, name: str) -> tuple[pd.DataFrame, np.ndarray]:
        """One committed part: its rows and latents (row i ↔ latents[i])."""
        npy = self.parts_dir / f"{name}.npy"
        lat = np.load(io.BytesIO(npy.read_bytes()) if is_remote(npy) else npy)
        return read_parquet(self.parts_dir / f"{name}.parquet"), lat

    def write_part_rows(self, name: str, rows: pd.DataFrame) -> None:
        """Replace a committed part's rows (atomically), its latents kept."""
        write_parquet(rows, self.parts_dir / f"{name}.parquet")

    def read_parts(self) -> tuple[pd.DataFrame, np.ndarray]:
        """All committed rows and their latents (row i ↔ latents[i]); may hold duplicates."""
        rows, lats = [], []
        for name in self.part_names():
            r, lat = self.read_part(name)
            rows.append(r)
            lats.append(lat)
        if not rows:
            return pd.DataFrame(), np.zeros((0, 1, 1), np.float32)
        return pd.concat(rows, ignore_index=True), np.concatenate(lats)

    # -- consolidated outputs --------------------------------------------------------------------
    def write_outputs(self, table: pd.DataFrame, latents: np.ndarray) -> None:
        """``latents.zarr`` (row = ``latent_row``) then ``inversion.parquet`` (last)."""
        tmp = temp_sibling(self.latents_path)
        try:
            group = zarr.open_group(zarr_store(tmp), mode="w", zarr_format=3)
            n = len(latents)
            arr = group.create_array(
                "latents",
                shape=latents.shape,
                dtype="float32",
                chunks=(max(1, min(1024, n)), *latents.shape[1:]),
                dimension_names=("tile", "ws", "w"),
            )
            ids = group.create_array("tile_id", shape=(n,), dtype=str, chunks=(max(1, n),))
            if n:
                arr[:] = latents
                ids[:] = table["tile_id"].astype(str).to_numpy()
            replace_dir(tmp, self.latents_path)
        except BaseException:
            remove_tree(tmp)
            raise
        write_parquet(table, self.table)

    def read_table(self) -> pd.DataFrame:
        return read_parquet(self.table)

    def read_latents(self, rows: np.ndarray | None = None) -> np.ndarray:
        arr = zarr.open_group(zarr_store(self.latents_path, read_only=True), mode="r")["latents"]
        return arr[:] if rows is None else arr[:][np.asarray(rows)]

    def read_tile_ids(self) -> np.ndarray:
        group = zarr.open_group(zarr_store(self.latents_path, read_only=True), mode="r")
        return group["tile_id"][:]
