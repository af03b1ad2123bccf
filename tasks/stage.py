"""What the per-part stages (predict, invert, analyze) share: where the generator and the
inversion's replicates live, the actor base, the resilient pool built from a stage's
``ActorPoolSettings`` with its progress bar, and the tile manifest check. Their content keys
are ``pipeline.provenance.content_key``; each holds the workdir's lock while it writes."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import ray
import torch
from tqdm import tqdm

from pipeline.config import ActorPoolSettings, Config
from pipeline.io.paths import WorkPath, as_path, is_url
from pipeline.io.tile_store import TileStore
from tasks.pool import ResilientPool

J = TypeVar("J")
SCORED_BY = "scored_by"  # part column: fingerprint of the classifier behind its scores


def generator_folder(cfg: Config) -> WorkPath:
    """``inversion.generator`` (a URL, or relative: to the current directory), else
    ``workdir/gan``."""
    g = cfg.inversion.generator
    if not g:
        return cfg.workdir / "gan"
    return as_path(g, cfg.storage_options) if is_url(g) else Path(g).expanduser().absolute()


def replicate_root(cfg: Config, replicate: int = 0) -> WorkPath:
    """Where replicate ``replicate`` of the inversion lives: ``workdir/inversion`` for the
    first, ``workdir/inversion/replicate-<r>`` for the others."""
    root = cfg.workdir / "inversion"
    return root if replicate == 0 else root / f"replicate-{replicate}"


def tiled(workdir: WorkPath, error: type[Exception], what: str) -> tuple[pd.DataFrame, int, int]:
    """The tile manifest of ``workdir`` and the tiles' size and channels; ``error`` names the
    manifest when there are no tiles (``what``: what the stage would do with them)."""
    store = TileStore(workdir / "tiles")
    if not store.tiles_manifest.is_file():
        raise error(f"{store.tiles_manifest}: no tiles; run `stylepath tile` first")
    manifest = store.read_manifest()
    if manifest.empty:
        raise error(f"{store.tiles_manifest}: no tiles to {what}")
    return manifest, *store.tile_shape(manifest)


def stage_device(num_gpus: float) -> torch.device:
    """CUDA when the stage asks for GPUs and one is there, else the CPU."""
    return torch.device("cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu")


class StageActor:
    """Base of the stages' Ray actors: torch threads from ``num_cpus``, the device from
    ``num_gpus``, and ``ready()`` (the pool gives work only to actors that answer it)."""

    def __init__(self, num_cpus: float, num_gpus: float) -> None:
        torch.set_num_threads(max(1, int(num_cpus)))
        self.device = stage_device(num_gpus)

    def ready(self) -> bool:
        """Answers once the actor's models are loaded."""
        return True


def actor_class(cls: type, settings: ActorPoolSettings) -> Any:
    """``cls`` as a Ray actor class with the stage's CPUs and GPUs."""
    return ray.remote(cls).options(num_cpus=settings.num_cpus, num_gpus=settings.num_gpus)


def stage_pool(
    settings: ActorPoolSettings,
    make_actor: Callable[[], Any],
    call: Callable[[Any, J], ray.ObjectRef],
    n_jobs: int,
) -> ResilientPool[J]:
    """The stage's pool. Ray's own restarts and retries are off: ``ResilientPool`` replaces
    dead actors on live nodes itself (a restart pinned to a lost node would wait forever)."""
    return ResilientPool(
        make_actor=make_actor,
        call=call,
        concurrency=max(1, min(settings.concurrency, n_jobs)),
        timeout_s=settings.task_timeout_s,
        max_replacements=settings.max_restarts,
        max_job_failures=settings.max_task_retries + 1,
    )


@contextmanager
def progress_bar(total: int, unit: str, desc: str, progress: bool | None) -> Iterator[tqdm]:
    """A progress bar on stderr (shown on a terminal when ``progress`` is None), closed after."""
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=total, unit=unit, desc=desc, disable=not show, file=sys.stderr)
    try:
        yield bar
    finally:
        bar.close()


def run_stage_pool(
    settings: ActorPoolSettings,
    make_actor: Callable[[], Any],
    call: Callable[[Any, J], ray.ObjectRef],
    jobs: Sequence[J],
    on_result: Callable[[J, Any], None],
    *,
    stage: str,
    setting: str,
    describe: Callable[[J], str],
    kept: str = "",
) -> None:
    """Every job to a committed result on the stage's pool (``ResilientPool.run_all``): a
    stuck pool or a given-up job fails the stage naming ``setting`` (the config section)."""
    pool = stage_pool(settings, make_actor, call, len(jobs))
    pool.run_all(
        jobs,
        on_result,
        stage=stage,
        describe=describe,
        timeout_setting=f"{setting}.task_timeout_s",
        kept=kept,
    )
