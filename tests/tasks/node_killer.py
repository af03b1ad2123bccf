"""Shared by the multinode fault scripts: kill a Ray worker node once a stage has committed
its first part file (a real node death in the middle of a running stage)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any


class NodeKiller:
    """Watch ``parts`` from a thread; when the first ``*.parquet`` appears, remove ``node`` from
    ``cluster`` without a graceful shutdown. ``after_parts``: how many parts existed then."""

    def __init__(self, cluster: Any, node: Any, parts: Path, timeout_s: float = 120.0,
                 poll_s: float = 0.02) -> None:  # fmt: skip
        self.cluster, self.node, self.parts = cluster, node, parts
        self.timeout_s, self.poll_s = timeout_s, poll_s
        self.after_parts: int | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        deadline = time.time() + self.timeout_s
        while time.time() < deadline:
            if self.parts.is_dir() and any(self.parts.glob("*.parquet")):
                self.cluster.remove_node(self.node, allow_graceful=False)
                self.after_parts = len(list(self.parts.glob("*.parquet")))
                return
            time.sleep(self.poll_s)

    def __enter__(self) -> NodeKiller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join()
