"""Atomic file writes: write a temporary sibling, then ``os.replace`` it into place."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml


def temp_sibling(path: Path) -> Path:
    """A unique temporary name in the same folder (same filesystem, so rename is atomic)."""
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` and move ``tmp`` onto ``path``; on error nothing is left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, *, only_if_changed: bool = False) -> bool:
    """Write ``text``; with ``only_if_changed`` an identical file is left untouched.

    Returns True if the file was written.
    """
    path = Path(path)
    if only_if_changed and path.is_file() and path.read_text() == text:
        return False
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return True


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_yaml(path: Path, data: Any) -> None:
    """Write YAML; an identical existing file is not rewritten (re-runs touch nothing)."""
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False), only_if_changed=True)


def replace_dir(src: Path, dst: Path) -> None:
    """Move folder ``src`` onto ``dst``, replacing an existing ``dst`` with one rename.

    The old ``dst`` is renamed aside first and deleted after the new one is in place, so a
    reader sees either the old or the new folder, never a half-written one.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if dst.exists():
        old = temp_sibling(dst)
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class WorkdirBusyError(RuntimeError):
    """Another run holds the lock of this output folder."""


@contextmanager
def workdir_lock(folder: Path) -> Iterator[None]:
    """Exclusive lock on ``folder/.lock`` so two runs never write the same outputs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirBusyError(f"{folder}: another stylepath run is writing here") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def files_sha256(paths: list[Path], *, missing_ok: bool = False) -> str:
    """SHA-256 (16 hex digits) over the bytes of ``paths`` in order, read in 1 MiB blocks;
    with ``missing_ok`` an absent file counts as its name only."""
    h = hashlib.sha256()
    for p in map(Path, paths):
        h.update(p.name.encode())
        if missing_ok and not p.is_file():
            continue
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]
