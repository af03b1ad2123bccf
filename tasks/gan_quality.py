"""``stylepath gan-quality``: the measured quality bar of the trained generator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config import Config
from pipeline.gan.generator import load_generator
from pipeline.gan.loop import generate, latent_samples
from pipeline.gan.quality import panel_indices, quality_report
from pipeline.io.files import atomic_write_json
from pipeline.io.images import image_grid, save_png
from pipeline.io.paths import as_path
from pipeline.io.tile_store import TileStore


def run_gan_quality(
    cfg: Config, n: int = 512, seed: int = 7, generator: Path | None = None
) -> dict[str, Any]:
    """Compare ``n`` real tiles with ``n`` samples of the generator in ``generator`` (default
    ``workdir/gan``); writes ``quality.json`` and a reals-vs-samples image beside it."""
    out = as_path(generator) if generator is not None else cfg.workdir / "gan"
    gen = load_generator(out)
    store = TileStore(cfg.workdir / "tiles")
    manifest = store.read_manifest()
    pick = np.sort(np.random.default_rng(seed).choice(len(manifest), n, replace=False))
    sub = manifest.iloc[pick]
    groups = list(sub.groupby("slide_id", sort=False))
    reals = np.concatenate([store.read_tiles(str(s), g["index"].to_numpy()) for s, g in groups])
    slide_of = np.concatenate([[str(s)] * len(g) for s, g in groups])
    torch.set_num_threads(2)
    fakes = generate(gen.G, n, seed=seed + 1)
    report = quality_report(
        reals,
        fakes,
        mpp=cfg.tiling.mpp,
        seed=seed,
        features=cfg.analysis.features,
        latents=latent_samples(gen.G, n, seed + 2),
    )
    report["kimg"] = gen.meta.get("kimg")
    atomic_write_json(out / "quality.json", report)
    shown = panel_indices(slide_of, 32)  # every slide, however few of its tiles were drawn
    pair = np.concatenate([image_grid(reals[shown], 8), image_grid(fakes[:32], 8)], axis=1)
    save_png(out / "quality_reals_vs_samples.png", pair)
    return report
