"""Training batches streamed from the tile store: shuffled per epoch, disjoint per worker,
optionally flipped / rotated by 90° (valid for histology), never loaded whole into RAM."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pipeline.io.tile_store import TileStore


@dataclass
class DataCursor:
    """Where the stream is: resuming from a cursor yields the same batches as before."""

    epoch: int = 0
    position: int = 0  # batches consumed in this epoch


def epoch_order(n_tiles: int, seed: int, epoch: int, rank: int, world_size: int) -> np.ndarray:
    """This worker's tile order for an epoch: one shared permutation, strided by rank."""
    perm = np.random.default_rng([seed, epoch]).permutation(n_tiles)
    usable = n_tiles - n_tiles % world_size  # equal shares so workers stay in step
    return perm[:usable][rank::world_size]


def dihedral(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random x-flip and 90° rotation per image: uint8 [N, H, W, C] → same shape."""
    out = np.empty_like(images)
    flips = rng.integers(0, 2, len(images))
    turns = rng.integers(0, 4, len(images))
    for i, img in enumerate(images):
        out[i] = np.rot90(img[:, ::-1] if flips[i] else img, turns[i])
    return out


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, C] → float [N, C, H, W] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


class TileBatches:
    """Endless iterator of training batches for one worker."""

    def __init__(self, store: TileStore, manifest: pd.DataFrame, batch_size: int, *, seed: int,
                 rank: int = 0, world_size: int = 1, dihedral_aug: bool = True,
                 cursor: DataCursor | None = None) -> None:  # fmt: skip
        if len(manifest) < batch_size * world_size:
            raise ValueError(
                f"{len(manifest)} tiles are fewer than one batch ({batch_size} x {world_size})"
            )
        self.store = store
        self.slide_ids = manifest["slide_id"].to_numpy()
        self.indices = manifest["index"].to_numpy()
        self.batch_size = batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.dihedral_aug = dihedral_aug
        self.cursor = cursor or DataCursor()

    def _read(self, rows: np.ndarray) -> np.ndarray:
        out = None
        for sid in np.unique(self.slide_ids[rows]):
            sel = np.flatnonzero(self.slide_ids[rows] == sid)
            tiles = self.store.read_tiles(str(sid), self.indices[rows[sel]])
            if out is None:
                out = np.empty((len(rows), *tiles.shape[1:]), dtype=tiles.dtype)
            out[sel] = tiles
        assert out is not None
        return out

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def __next__(self) -> torch.Tensor:
        c = self.cursor
        order = epoch_order(len(self.slide_ids), self.seed, c.epoch, self.rank, self.world_size)
        n_batches = len(order) // self.batch_size
        if c.position >= n_batches:
            c.epoch, c.position = c.epoch + 1, 0
            return next(self)
        rows = order[c.position * self.batch_size : (c.position + 1) * self.batch_size]
        images = self._read(rows)
        if self.dihedral_aug:
            rng = np.random.default_rng([self.seed, c.epoch, c.position, self.rank])
            images = dihedral(images, rng)
        c.position += 1
        return to_tensor(images)
