"""A pool of Ray actors that survives lost actors and lost nodes.

``ray.util.ActorPool`` with ``max_restarts``/``max_task_retries`` stalls or dies when a node
goes away: the restarted actor waits for resources that left with the node, and calls on it
end in ``ActorUnavailableError`` once the retries are spent. Here the driver handles faults
itself, with Ray's own restarts and retries off:

- Actors get work only once they answer ``ready()``, one job at a time, so an actor that
  cannot be placed (its node is gone, the cluster is full) never holds a job.
- A job whose actor dies (process killed, node lost, actor unreachable) goes back to the
  queue; the actor is killed and, within ``max_replacements`` per round, replaced by a fresh
  one that Ray places on a live node.
- The pool runs in rounds: when a round ends with jobs left (all its actors dead, or no job
  finished for ``timeout_s``), a new round starts fresh actors for them. A round that
  finishes no job ends the run with ``PoolStuckError``.
- A job that killed ``max_job_failures`` actors is given up (``on_give_up``), so one bad
  input cannot stop the rest.

Results reach ``on_result`` in the driver, which commits them (atomic part files); a job is
done only then, so a killed driver resumes from the committed parts.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import ray
from ray.exceptions import (
    ActorUnschedulableError,
    NodeDiedError,
    ObjectLostError,
    RayActorError,
    WorkerCrashedError,
)

J = TypeVar("J")
# Test hook of the actor pools (invert, predict, analyze): a marker path; while it does not
# exist, an actor creates it and exits on its first job (a real process death, once).
FAULT_ENV = "STYLEPATH_FAULT_EXIT_ONCE"
# Failures of the machinery, not of the job's code: the job is retried on another actor.
SYSTEM_ERRORS = (
    RayActorError,
    WorkerCrashedError,
    NodeDiedError,
    ObjectLostError,
    ActorUnschedulableError,
)


class PoolStuckError(RuntimeError):
    """A whole round of fresh actors finished no job."""


@dataclass
class PoolStats:
    rounds: int = 0
    finished: int = 0
    actor_deaths: int = 0
    replacements: int = 0
    timeouts: int = 0
    given_up: int = 0
    errors: list[str] = field(default_factory=list)  # the last few system errors, for logs

    def note(self, exc: BaseException) -> None:
        self.errors = [*self.errors[-4:], f"{type(exc).__name__}: {str(exc)[:300]}"]


@dataclass
class ResilientPool(Generic[J]):
    """``make_actor()`` → a new actor handle with a ``ready()`` method; ``call(actor, job)``
    → the ``ObjectRef`` of the job's result."""

    make_actor: Callable[[], Any]
    call: Callable[[Any, J], ray.ObjectRef]
    concurrency: int
    timeout_s: float
    max_replacements: int = 3
    max_job_failures: int = 4
    stats: PoolStats = field(default_factory=PoolStats)

    def run(
        self,
        jobs: Sequence[J],
        on_result: Callable[[J, Any], None],
        on_give_up: Callable[[J, str], None],
    ) -> PoolStats:
        """Run every job once to a committed result (or give it up); raise ``PoolStuckError``
        when a round makes no progress. Errors raised by a job's own code propagate."""
        failures: dict[int, int] = {}
        todo = deque(range(len(jobs)))
        while todo:
            self.stats.rounds += 1
            before = self.stats.finished + self.stats.given_up
            todo = self._round(jobs, todo, failures, on_result, on_give_up)
            if todo and self.stats.finished + self.stats.given_up == before:
                last = self.stats.errors[-1] if self.stats.errors else "no error seen"
                raise PoolStuckError(
                    f"round {self.stats.rounds} of fresh actors finished none of the "
                    f"{len(todo)} jobs left (timeout {self.timeout_s:.0f} s; last: {last})"
                )
        return self.stats

    def run_all(
        self,
        jobs: Sequence[J],
        on_result: Callable[[J, Any], None],
        *,
        stage: str,
        describe: Callable[[J], str],
        timeout_setting: str,
        kept: str = "",
    ) -> PoolStats:
        """``run`` for a stage that needs every job: a stuck pool or a given-up job raises one
        ``RuntimeError`` naming the stage, the jobs (``describe``) and the setting to raise;
        ``kept`` says what a re-run keeps."""
        given_up: list[str] = []
        try:
            stats = self.run(
                jobs, on_result, lambda job, why: given_up.append(f"{describe(job)}: {why}")
            )
        except PoolStuckError as exc:
            raise RuntimeError(f"{stage} stopped: {exc} ({timeout_setting}){kept}") from None
        if given_up:
            raise RuntimeError(
                f"{stage}: actors kept dying on {len(given_up)} job(s) "
                f"({'; '.join(given_up[:3])}){kept}"
            )
        return stats

    def _round(
        self,
        jobs: Sequence[J],
        todo: deque[int],
        failures: dict[int, int],
        on_result: Callable[[J, Any], None],
        on_give_up: Callable[[J, str], None],
    ) -> deque[int]:
        actors: list[Any] = []
        inflight: dict[ray.ObjectRef, tuple[Any, int | None]] = {}  # job None: ready probe

        def start() -> None:
            actor = self.make_actor()
            actors.append(actor)
            inflight[actor.ready.remote()] = (actor, None)

        for _ in range(min(self.concurrency, len(todo))):
            start()
        replacements = 0
        last_progress = time.monotonic()
        try:
            while inflight:
                if not todo and all(j is None for _, j in inflight.values()):
                    break  # only actors still waiting to be placed: nothing for them
                wait_s = max(0.0, last_progress + self.timeout_s - time.monotonic())
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=wait_s)
                if not ready:  # no job finished for timeout_s: these actors are stuck
                    self.stats.timeouts += 1
                    todo.extendleft(j for _, j in inflight.values() if j is not None)
                    break
                actor, job = inflight.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except SYSTEM_ERRORS as exc:
                    if isinstance(exc, RayActorError) and exc.actor_init_failed:
                        raise  # the actor's own __init__ failed: a bug or a bad input
                    _kill(actor)
                    if job is not None:
                        self._failed(jobs, job, exc, failures, todo, on_give_up)
                    else:
                        self.stats.note(exc)
                    self.stats.actor_deaths += 1
                    if todo and replacements < self.max_replacements:
                        replacements += 1
                        self.stats.replacements += 1
                        start()
                    continue
                if job is not None:
                    on_result(jobs[job], result)
                    self.stats.finished += 1
                    last_progress = time.monotonic()
                if todo:
                    nxt = todo.popleft()
                    inflight[self.call(actor, jobs[nxt])] = (actor, nxt)
        finally:
            for actor in actors:
                _kill(actor)
        return todo

    def _failed(
        self,
        jobs: Sequence[J],
        job: int,
        exc: BaseException,
        failures: dict[int, int],
        todo: deque[int],
        on_give_up: Callable[[J, str], None],
    ) -> None:
        """A job's actor died: back to the queue, or given up after ``max_job_failures``."""
        self.stats.note(exc)
        failures[job] = failures.get(job, 0) + 1
        if failures[job] < self.max_job_failures:
            todo.appendleft(job)
            return
        self.stats.given_up += 1
        on_give_up(jobs[job], f"{failures[job]} actors died on it; last: {self.stats.errors[-1]}")


def fault_marker() -> str | None:
    """The driver's ``FAULT_ENV`` value, to pass to the actors it starts."""
    return os.environ.get(FAULT_ENV) or None


def exit_once(marker: str | None) -> None:
    """In an actor: the test hook of ``FAULT_ENV``; die mid-job once per marker."""
    if marker and not os.path.exists(marker):
        with open(marker, "a"):
            pass
        os._exit(1)


def _kill(actor: Any) -> None:
    with contextlib.suppress(Exception):  # already dead or unreachable: nothing left to stop
        ray.kill(actor, no_restart=True)
