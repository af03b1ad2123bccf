"""Training batches streamed from the tile store: shuffled per epoch, disjoint per worker,
optionally flipped / rotated by 90° (valid for histology), never loaded whole into RAM.

Reading tiles one by one from a sharded zarr array costs milliseconds each (a shard-index
read and an async round trip per tile), which starves a GPU. So the shuffle is two-level,
as with a shuffle buffer: each epoch permutes *blocks* of ``block_tiles`` consecutive tiles
of a slide (one contiguous read each), deals the blocks out to the workers, and shuffles
the tiles within windows of ``window_blocks`` blocks. The order is a pure function of
(seed, epoch, rank), so a resumed run reads exactly the batches the first run would have.
"""

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


def make_blocks(slide_ids: np.ndarray, indices: np.ndarray, block_tiles: int) -> list[np.ndarray]:
    """Manifest rows cut into blocks of ≤ ``block_tiles`` tiles of one slide, in store order."""
    order = np.lexsort((indices, slide_ids))
    blocks: list[np.ndarray] = []
    starts = np.flatnonzero(np.r_[True, slide_ids[order][1:] != slide_ids[order][:-1]])
    for a, b in zip(starts, np.r_[starts[1:], len(order)], strict=True):
        blocks.extend(order[i : min(i + block_tiles, b)] for i in range(a, b, block_tiles))
    return blocks


@dataclass(frozen=True)
class EpochPlan:
    """One worker's tile order for an epoch and the shuffle window of each position."""

    rows: np.ndarray  # manifest rows in the order they are used
    window: np.ndarray  # window number of each position
    windows: list[np.ndarray]  # rows of each window (what one read brings in)


def epoch_plan(
    blocks: list[np.ndarray], seed: int, epoch: int, rank: int, world_size: int, window_blocks: int
) -> EpochPlan:
    """Permute the blocks, deal them to workers, shuffle within windows; equal lengths on
    every worker (the longest are cut) so workers stay in step."""
    perm = np.random.default_rng([seed, epoch]).permutation(len(blocks))
    sizes = np.array([len(blocks[i]) for i in perm])
    usable = min(int(sizes[r::world_size].sum()) for r in range(world_size))
    mine = perm[rank::world_size]
    windows, parts = [], []
    for k, g in enumerate(range(0, len(mine), window_blocks)):
        rows = np.concatenate([blocks[i] for i in mine[g : g + window_blocks]])
        windows.append(rows)
        parts.append(rows[np.random.default_rng([seed, epoch, rank, k]).permutation(len(rows))])
    rows = np.concatenate(parts)[:usable]
    window = np.repeat(np.arange(len(windows)), [len(w) for w in windows])[:usable]
    return EpochPlan(rows=rows, window=window, windows=windows)


def dihedral(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random x-flip and 90° rotation per image: uint8 [N, H, W, C] → same shape."""
    out = np.empty_like(images)
    flips = rng.integers(0, 2, len(images))
    turns = rng.integers(0, 4, len(images))
    for i, img in enumerate(images):
        out[i] = np.rot90(img[:, ::-1] if flips[i] else img, turns[i])
    return out


def to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, C] (array, or tensor on any device) → float [N, C, H, W] in [-1, 1]."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1


class TileBatches:
    """Endless iterator of training batches for one worker (see the module docstring):
    uint8 tensors [N, H, W, C]; ``to_tensor`` converts them, best after moving them to the
    training device (a quarter of the bytes to copy)."""

    def __init__(
        self,
        store: TileStore,
        manifest: pd.DataFrame,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        dihedral_aug: bool = True,
        cursor: DataCursor | None = None,
        block_tiles: int = 16,
        window_blocks: int = 64,
    ) -> None:
        if len(manifest) < batch_size * world_size:
            raise ValueError(
                f"{len(manifest)} tiles are fewer than one batch ({batch_size} x {world_size})"
            )
        self.store = store
        self.slide_ids = manifest["slide_id"].astype(str).to_numpy()
        self.indices = manifest["index"].to_numpy()
        self.blocks = make_blocks(self.slide_ids, self.indices, block_tiles)
        self.batch_size = batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.window_blocks = window_blocks
        self.dihedral_aug = dihedral_aug
        self.cursor = cursor or DataCursor()
        self._plan: tuple[int, EpochPlan] | None = None
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # window → (rows, tiles)

    def _epoch(self, epoch: int) -> EpochPlan:
        if self._plan is None or self._plan[0] != epoch:
            plan = epoch_plan(
                self.blocks, self.seed, epoch, self.rank, self.world_size, self.window_blocks
            )
            self._plan, self._cache = (epoch, plan), {}
        return self._plan[1]

    def _window(self, plan: EpochPlan, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Tiles of window ``k``, read as contiguous runs; keeps the last two windows."""
        if k not in self._cache:
            rows = np.sort(plan.windows[k])
            parts = []
            for sid in pd.unique(self.slide_ids[rows]):
                sel = rows[self.slide_ids[rows] == sid]
                parts.append((sel, self.store.read_tiles(str(sid), self.indices[sel])))
            rows = np.concatenate([p[0] for p in parts])
            tiles = np.concatenate([p[1] for p in parts])
            order = np.argsort(rows)
            self._cache = {j: v for j, v in self._cache.items() if j >= k - 1}
            self._cache[k] = (rows[order], tiles[order])
        return self._cache[k]

    def _read(self, plan: EpochPlan, positions: np.ndarray) -> np.ndarray:
        out = None
        for k in np.unique(plan.window[positions]):
            at = positions[plan.window[positions] == k]
            rows, tiles = self._window(plan, int(k))
            got = tiles[np.searchsorted(rows, plan.rows[at])]
            if out is None:
                out = np.empty((len(positions), *got.shape[1:]), dtype=got.dtype)
            out[np.flatnonzero(plan.window[positions] == k)] = got
        assert out is not None
        return out

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def __next__(self) -> torch.Tensor:
        c = self.cursor
        plan = self._epoch(c.epoch)
        if c.position >= len(plan.rows) // self.batch_size:
            c.epoch, c.position = c.epoch + 1, 0
            return next(self)
        positions = np.arange(c.position * self.batch_size, (c.position + 1) * self.batch_size)
        images = self._read(plan, positions)
        if self.dihedral_aug:
            rng = np.random.default_rng([self.seed, c.epoch, c.position, self.rank])
            images = dihedral(images, rng)
        c.position += 1
        return torch.from_numpy(np.ascontiguousarray(images))
