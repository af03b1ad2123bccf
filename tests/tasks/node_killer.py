"""Shared by the multinode fault scripts: kill a Ray worker node once a stage has committed
its first part file (a real node death in the middle of a running stage).

A lost machine takes its worker processes with it. ``Cluster.remove_node`` kills only the
node's own processes (raylet, ...); its task and actor workers notice the dead raylet a
moment later and could meanwhile finish the stage's remaining batches (one fresh-clone run
saw no actor die). So the killer also SIGKILLs every descendant of the node's processes."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import psutil


class NodeKiller:
    """Watch ``parts`` from a thread; when the first ``*.parquet`` appears, remove ``node`` from
    ``cluster`` without a graceful shutdown. ``after_parts``: how many parts existed then."""

    def __init__(
        self, cluster: Any, node: Any, parts: Path, timeout_s: float = 120.0, poll_s: float = 0.02
    ) -> None:
        self.cluster, self.node, self.parts = cluster, node, parts
        self.timeout_s, self.poll_s = timeout_s, poll_s
        self.after_parts: int | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        deadline = time.time() + self.timeout_s
        while time.time() < deadline:
            if self.parts.is_dir() and any(self.parts.glob("*.parquet")):
                workers = self._descendants()
                self.cluster.remove_node(self.node, allow_graceful=False)
                for proc in workers:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        proc.kill()
                self.after_parts = len(list(self.parts.glob("*.parquet")))
                return
            time.sleep(self.poll_s)

    def _descendants(self) -> list[psutil.Process]:
        """Every live process started under the node's own processes (its Ray workers)."""
        out = []
        for infos in self.node.all_processes.values():
            for info in infos:
                with contextlib.suppress(psutil.NoSuchProcess):
                    out += psutil.Process(info.process.pid).children(recursive=True)
        return out

    def __enter__(self) -> NodeKiller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join()
