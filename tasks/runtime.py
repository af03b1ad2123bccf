"""Connect to Ray quietly: embedded local Ray on a laptop, an existing cluster elsewhere."""

from __future__ import annotations

import logging
import os
import warnings

import ray

from pipeline.config import RayConfig

log = logging.getLogger("stylepath")


def ensure_ray(cfg: RayConfig) -> None:
    """Start (or join) Ray once per process; banners and worker logs stay quiet."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # Workers inherit this: OpenMP threads that spin while waiting made a 2-thread torch step
    # ~10x slower whenever another process shared the cores (measured on 2 cores).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    warnings.filterwarnings("ignore", module="ray")
    kwargs: dict = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
        "configure_logging": True,
    }
    joining = cfg.address not in (None, "", "local") or (
        cfg.address is None  # RAY_ADDRESS set by e.g. `ray job submit`
        and os.environ.get("RAY_ADDRESS", "local") not in ("", "local")
    )
    if not joining:
        # "local", not None: a stale /tmp/ray/ray_current_cluster left by a killed cluster
        # would otherwise make ray.init() try to join it.
        kwargs["address"] = "local"
        kwargs["num_cpus"] = cfg.num_cpus
        if cfg.temp_dir:
            kwargs["_temp_dir"] = cfg.temp_dir
    elif cfg.address:
        kwargs["address"] = cfg.address
    ray.init(**kwargs)
    if not joining:
        _publish_address(cfg.temp_dir)
    log.debug("ray resources: %s", ray.cluster_resources())


def _publish_address(temp_dir: str | None) -> None:
    """Point ``ray_current_cluster`` at the Ray just started, as ``ray start`` does.

    Ray Train's controller finds its cluster through the state API's "auto" address, which
    reads that file; a stale one left by a killed cluster made ``TorchTrainer.fit`` wait on a
    dead GCS ("Timed out while waiting for GCS to become available") and hang.
    """
    from ray._private.utils import write_ray_address  # Ray's own helper (pinned Ray)

    write_ray_address(ray.get_runtime_context().gcs_address, temp_dir)
