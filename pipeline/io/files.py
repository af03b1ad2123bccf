"""Atomic file writes: a temporary sibling ``os.replace``-d into place on a local disk; on
object storage a finished local temporary file uploaded with one PUT (see ``pipeline.io.paths``
for what object stores guarantee)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from pipeline.io.paths import WorkPath, as_path, is_remote, move_tree, put_file

LOCK_NAME = ".lock"
LEASE_S = 300.0  # an object-store lock not refreshed for this long belongs to a dead run


def _process_umask() -> int:
    """The umask, read once (``os.umask`` can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _process_umask()


def temp_sibling(path: WorkPath) -> WorkPath:
    """A unique temporary name in the same folder (same filesystem, so rename is atomic)."""
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")


@contextmanager
def staging_dir() -> Iterator[Path]:
    """A temporary local folder, removed on exit, with the mode a plain ``mkdir`` gives it
    (``tempfile`` makes 0700): for folders copied whole into a run directory, such as Ray Train
    checkpoints, which keep the folder's mode, so the group can read them on shared storage."""
    with tempfile.TemporaryDirectory(prefix="stylepath-") as d:
        os.chmod(d, 0o777 & ~_UMASK)
        yield Path(d)


def atomic_write(path: WorkPath | str, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` and move ``tmp`` onto ``path``; on error nothing is left behind.

    ``tmp`` is always a local path; for a URL it is uploaded when complete (one object).
    """
    path = as_path(path)
    if is_remote(path):
        with tempfile.TemporaryDirectory(prefix="stylepath-") as d:
            tmp = Path(d) / path.name
            write(tmp)
            if tmp.is_dir():
                raise IsADirectoryError(f"{path}: atomic_write writes files, not folders")
            put_file(tmp, path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        write(tmp)
        if tmp.is_file():  # writers that create 0600 files (safetensors) get a plain open()'s
            os.chmod(tmp, 0o666 & ~_UMASK)  # mode: readable by the group on shared storage
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: WorkPath | str, text: str, *, only_if_changed: bool = False) -> bool:
    """Write ``text``; with ``only_if_changed`` an identical file is left untouched.

    Returns True if the file was written.
    """
    path = as_path(path)
    if only_if_changed and path.is_file() and path.read_text() == text:
        return False
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return True


def atomic_write_json(path: WorkPath | str, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_yaml(path: WorkPath | str, data: Any) -> None:
    """Write YAML; an identical existing file is not rewritten (re-runs touch nothing)."""
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False), only_if_changed=True)


def replace_dir(src: WorkPath, dst: WorkPath) -> None:
    """Move folder ``src`` onto ``dst``, replacing an existing ``dst`` with one rename.

    The old ``dst`` is renamed aside first and deleted after the new one is in place, so a
    reader sees either the old or the new folder, never a half-written one. On object storage
    (no rename) the objects are copied and ``src`` deleted (``move_tree``): callers publish a
    commit mark after this, which is what a resumed run trusts.
    """
    src, dst = as_path(src), as_path(dst)
    if is_remote(dst):
        move_tree(src, dst)
        return
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
def workdir_lock(folder: WorkPath | str) -> Iterator[None]:
    """Exclusive lock on ``folder/.lock`` so two runs never write the same outputs.

    Local folders: ``flock`` (released by the kernel when the process dies). Object storage:
    a lease object created with a conditional PUT (``If-None-Match: *``, so exactly one run
    creates it), refreshed every ``LEASE_S / 4`` by a thread and deleted on exit; a lease not
    refreshed for ``LEASE_S`` is a killed run's and is taken over.
    """
    folder = as_path(folder)
    if is_remote(folder):
        with _lease(folder / LOCK_NAME):
            yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirBusyError(f"{folder}: another stylepath run is writing here") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _create_exclusive(fs: Any, key: str, body: bytes) -> bool:
    try:
        with fs.open(key, "xb") as fh:
            fh.write(body)
    except FileExistsError:
        return False
    fs.invalidate_cache(key.rsplit("/", 1)[0])
    return True


@contextmanager
def _lease(lock: Any) -> Iterator[None]:
    fs, key = lock.fs, lock.path
    owner = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "id": uuid.uuid4().hex,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    body = json.dumps(owner).encode()
    if not _create_exclusive(fs, key, body):
        fs.invalidate_cache(key.rsplit("/", 1)[0])
        try:
            info = fs.info(key)
            age = (datetime.now(UTC) - info["LastModified"]).total_seconds()
            holder = fs.cat_file(key).decode(errors="replace")
        except FileNotFoundError:  # released meanwhile
            age, holder = LEASE_S, ""
        if age < LEASE_S:
            raise WorkdirBusyError(
                f"{lock.parent}: another stylepath run is writing here ({holder}; lease "
                f"refreshed {age:.0f} s ago, stale after {LEASE_S:.0f} s)"
            )
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(key)  # a killed run's lease
        if not _create_exclusive(fs, key, body):
            raise WorkdirBusyError(f"{lock.parent}: another stylepath run took the lock")
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(LEASE_S / 4):
            with contextlib.suppress(Exception):  # a missed refresh only shortens the lease
                fs.pipe_file(key, body)

    thread = threading.Thread(target=refresh, name="stylepath-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
        try:
            if json.loads(fs.cat_file(key)).get("id") == owner["id"]:
                fs.rm_file(key)
        except (FileNotFoundError, ValueError):
            pass


def files_sha256(paths: list[WorkPath], *, missing_ok: bool = False) -> str:
    """SHA-256 (16 hex digits) over the bytes of ``paths`` in order, read in 1 MiB blocks;
    with ``missing_ok`` an absent file counts as its name only."""
    h = hashlib.sha256()
    for p in map(as_path, paths):
        h.update(p.name.encode())
        if missing_ok and not p.is_file():
            continue
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]
