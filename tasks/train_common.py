"""Ray Train plumbing shared by the training stages (``train-gan``, ``train-classifier``).

Ray is imported inside ``fit_ray_train`` only: ``train-gan --local`` runs without Ray.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipeline.config import RayConfig, RayTrainSettings
from pipeline.io.checkpoints import CheckpointError
from pipeline.io.paths import WorkPath, arrow_filesystem

if TYPE_CHECKING:
    import ray.train


def fit_ray_train(
    loop: Callable[[dict[str, Any]], None],
    loop_config: dict[str, Any],
    settings: RayTrainSettings,
    storage: WorkPath,
    ray_cfg: RayConfig,
    *,
    num_to_keep: int | None,
) -> tuple[ray.train.Checkpoint, float]:
    """Run ``loop(loop_config)`` on Ray Train workers as ``settings`` asks, checkpointing into
    ``storage/train`` (keeping ``num_to_keep``); the last checkpoint and the seconds the
    trainer took (Ray's start not counted). Raises ``CheckpointError`` when none was written."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from tasks.runtime import ensure_ray

    filesystem, storage_path = arrow_filesystem(storage)  # URL: the workdir's fsspec filesystem
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    ensure_ray(ray_cfg)
    t0 = time.perf_counter()
    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=settings.num_workers,
            use_gpu=settings.use_gpu,
            resources_per_worker={"CPU": settings.cpus_per_worker},
        ),
        run_config=RunConfig(
            name="train",
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=num_to_keep),
            failure_config=FailureConfig(max_failures=settings.max_failures),
        ),
    )
    result = trainer.fit()
    seconds = time.perf_counter() - t0
    if result.checkpoint is None:
        raise CheckpointError(f"{storage}: training produced no checkpoint")
    return result.checkpoint, seconds
