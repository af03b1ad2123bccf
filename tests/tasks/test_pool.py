"""ResilientPool on a real local Ray: dying actors are replaced, a batch that keeps killing
its actors is given up, a pool that cannot progress stops with an error."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import ray
from ray import cloudpickle

from tasks.pool import PoolStuckError, ResilientPool

# Ray's workers cannot import this test module: ship its classes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Worker:
    def __init__(self, deaths: str) -> None:
        self.deaths = Path(deaths)

    def ready(self) -> bool:
        return True

    def work(self, job: int) -> int:
        if job == 3:  # a poison job: kills every actor that takes it
            with open(self.deaths, "a") as fh:
                fh.write("x")
            os._exit(1)
        return job * job


def test_dead_actors_are_replaced_and_a_poison_job_given_up(ray_local, tmp_path: Path) -> None:
    deaths = tmp_path / "deaths"
    cls = ray.remote(Worker).options(num_cpus=0.5)
    pool: ResilientPool[int] = ResilientPool(
        make_actor=lambda: cls.remote(str(deaths)),
        call=lambda a, j: a.work.remote(j),
        concurrency=2,
        timeout_s=60,
        max_replacements=1,
        max_job_failures=3,
    )
    done: dict[int, int] = {}
    gave_up: dict[int, str] = {}
    stats = pool.run(
        list(range(8)),
        lambda j, r: done.__setitem__(j, r),
        lambda j, why: gave_up.__setitem__(j, why),
    )
    assert done == {j: j * j for j in range(8) if j != 3}
    assert list(gave_up) == [3] and "3 actors died on it" in gave_up[3]
    assert deaths.read_text() == "xxx" and stats.actor_deaths == 3
    assert 1 <= stats.replacements <= stats.rounds  # at most one replacement per round
    # a stage that needs every job (predict, analyze): one error naming it and the job
    again: ResilientPool[int] = ResilientPool(
        make_actor=lambda: cls.remote(str(deaths)),
        call=lambda a, j: a.work.remote(j),
        concurrency=1,
        timeout_s=60,
        max_replacements=1,
        max_job_failures=1,
    )
    dying = r"(?s)^predict: actors kept dying on 1 job\(s\) \(job 3: 1 actors died on it.*; kept$"
    with pytest.raises(RuntimeError, match=dying):
        again.run_all(
            [3, 4],
            lambda j, r: None,
            stage="predict",
            describe=lambda j: f"job {j}",
            timeout_setting="x.timeout_s",
            kept="; kept",
        )


class Broken:
    def ready(self) -> bool:
        os._exit(1)


def test_a_round_without_progress_stops(ray_local) -> None:
    cls = ray.remote(Broken).options(num_cpus=0.5)
    pool: ResilientPool[int] = ResilientPool(
        make_actor=lambda: cls.remote(),
        call=lambda a, j: a.work.remote(j),
        concurrency=2,
        timeout_s=60,
        max_replacements=2,
    )
    with pytest.raises(PoolStuckError, match="finished none of the 4 jobs"):
        pool.run([1, 2, 3, 4], lambda j, r: None, lambda j, why: None)
    with pytest.raises(RuntimeError, match=r"(?s)^analyze stopped: round .* \(a.task_timeout_s\)$"):
        pool.run_all(
            [1],
            lambda j, r: None,
            stage="analyze",
            describe=str,
            timeout_setting="a.task_timeout_s",
        )


def test_embedded_ray_publishes_its_address(ray_local) -> None:
    """``ensure_ray`` points ``ray_current_cluster`` at the Ray it started: Ray Train's
    controller resolves its cluster through that file, and a stale one (a killed
    ``cluster_utils.Cluster``) made it wait on a dead GCS."""
    from ray._common.utils import get_ray_address_file

    from tasks.runtime import _publish_address

    path = Path(get_ray_address_file(None))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("192.0.2.1:6379")  # a dead cluster's address
    _publish_address(None)
    assert path.read_text().strip() == ray.get_runtime_context().gcs_address
