"""What produced an output: the code version and the config, recorded in every report."""

from __future__ import annotations

import functools
import subprocess
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@functools.cache
def code_version() -> str:
    """``<package version>+g<commit>[.dirty]`` in a git checkout, else the package version."""
    try:
        base = version("stylepath")
    except PackageNotFoundError:
        base = "0+unknown"
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, check=True,
                             capture_output=True, text=True, timeout=5).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, check=True, capture_output=True, text=True,
                               timeout=5).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return base
    return f"{base}+g{sha}{'.dirty' if dirty else ''}"


def provenance(config_hash: str, **extra: Any) -> dict[str, Any]:
    """The provenance block stored in report files."""
    return {"config_hash": config_hash, "code_version": code_version(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"), **extra}  # fmt: skip
