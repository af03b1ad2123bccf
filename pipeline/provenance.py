"""What produced an output: the code version and the config, recorded in every report."""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    """``git ARGS`` in the checkout, its output stripped."""
    run = subprocess.run(
        ["git", *args], cwd=REPO, check=True, capture_output=True, text=True, timeout=5
    )
    return run.stdout.strip()


@functools.cache
def code_version() -> str:
    """``<package version>+g<commit>[.dirty]`` in a git checkout, else the package version."""
    try:
        base = version("stylepath")
    except PackageNotFoundError:
        base = "0+unknown"
    try:
        sha = _git("rev-parse", "--short=12", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return base
    return f"{base}+g{sha}{'.dirty' if dirty else ''}"


def provenance(config_hash: str, **extra: Any) -> dict[str, Any]:
    """The provenance block stored in report files."""
    return {
        "config_hash": config_hash,
        "code_version": code_version(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,
    }


def content_key(*items: object, size: int = 20) -> str:
    """A hex key of ``items`` (arrays by their bytes, everything else as JSON): equal inputs,
    equal keys; the first ``size`` hex digits of a SHA-256. The one hash of cached inputs."""
    h = hashlib.sha256()
    for it in items:
        if isinstance(it, np.ndarray):
            h.update(it.tobytes())
        else:
            h.update(json.dumps(it, sort_keys=True, default=str).encode())
        h.update(b"|")
    return h.hexdigest()[:size]
