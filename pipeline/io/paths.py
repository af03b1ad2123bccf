"""Workdir paths: a local folder (``pathlib.Path``) or an fsspec URL (``s3://bucket/prefix``).

A local path stays a plain ``Path`` and every I/O module behaves exactly as on a local disk. A
URL becomes a ``UPath`` (universal-pathlib), which has the pathlib API (``/``, ``read_text``,
``exists``, ``glob``, ``unlink``…) on top of the fsspec filesystem of its protocol and carries
its storage options (endpoint, profile, …), so a path handed to a Ray task keeps them.
Credentials and the endpoint also come from the standard environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, instance roles), resolved by botocore in each process.

Object stores have no rename. What the I/O modules rely on instead:

* one object written by a single PUT (or a completed multipart upload) appears whole or not at
  all — ``put_file`` uploads a finished local temporary file, so ``atomic_write`` holds;
* a folder "move" (``move_tree``) is a server-side copy of each object, then deletes; it is
  not atomic, so every multi-object output is published before a small commit-mark object
  that is written last (tile records, inversion part rows, stage stamps), and a reader or a
  resumed run trusts only what a commit mark covers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, TypeAlias

from upath import UPath

WorkPath: TypeAlias = Path | UPath
LOCAL_PROTOCOLS = ("", "file", "local")


def is_url(value: str | os.PathLike[str]) -> bool:
    """True for ``scheme://…`` strings other than ``file://``."""
    s = str(value)
    return "://" in s and not s.startswith(("file://", "local://"))


def _options(storage_options: dict[str, Any] | None) -> dict[str, Any]:
    # No cached directory listings: other processes (Ray workers, zarr's own async filesystem)
    # write into the same prefixes, and a stale listing would hide or resurrect objects.
    return {"use_listings_cache": False, **(storage_options or {})}


def as_path(
    value: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
) -> WorkPath:
    """A ``Path`` for local paths, a ``UPath`` (with ``storage_options``) for URLs.

    A ``UPath`` passed in keeps its own options unless new ones are given.
    """
    if isinstance(value, UPath):
        if value.protocol in LOCAL_PROTOCOLS:
            return Path(value.path)
        if storage_options:
            return UPath(str(value), **_options(storage_options))
        return value
    if isinstance(value, Path):
        return value
    s = os.fspath(value)
    if s.startswith("file://"):
        return Path(s[len("file://") :])
    if is_url(s):
        return UPath(s, **_options(storage_options))
    return Path(s)


def is_remote(path: WorkPath) -> bool:
    """True when ``path`` lives on an fsspec filesystem other than the local disk."""
    return isinstance(path, UPath) and path.protocol not in LOCAL_PROTOCOLS


def same_location(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths (local or URLs) name the same place."""
    pa, pb = as_path(a), as_path(b)
    if is_remote(pa) or is_remote(pb):
        return str(pa).rstrip("/") == str(pb).rstrip("/")
    return pa.resolve() == pb.resolve()


def remove_file(path: WorkPath) -> None:
    """Delete a file; a missing file is fine."""
    if is_remote(path):
        with contextlib.suppress(FileNotFoundError):
            path.fs.rm_file(path.path)
    else:
        Path(path).unlink(missing_ok=True)


def remove_tree(path: WorkPath) -> None:
    """Delete a folder (every object under the prefix) and all it holds; missing is fine."""
    if is_remote(path):
        fs = path.fs
        keys = fs.find(path.path, withdirs=False)
        if keys:
            fs.rm(keys)
        fs.invalidate_cache(path.path)
    else:
        shutil.rmtree(path, ignore_errors=True)


def put_file(local: Path, dst: WorkPath) -> None:
    """Upload a finished local file (one PUT or one multipart upload: appears whole)."""
    dst.fs.put_file(str(local), dst.path)
    dst.fs.invalidate_cache(dst.parent.path)


def move_tree(src: WorkPath, dst: WorkPath) -> None:
    """Object stores: copy every object of ``src`` onto ``dst`` (server side), delete the
    objects of ``dst`` that ``src`` has not, then delete ``src``. Not atomic (see module doc)."""
    fs = src.fs
    base_src, base_dst = src.path.rstrip("/"), dst.path.rstrip("/")
    fs.invalidate_cache()
    keys = fs.find(base_src, withdirs=False)
    rel = [k[len(base_src) + 1 :] for k in keys]
    if keys:
        fs.copy(keys, [f"{base_dst}/{r}" for r in rel])
    stale = sorted(set(fs.find(base_dst, withdirs=False)) - {f"{base_dst}/{r}" for r in rel})
    if stale:
        fs.rm(stale)
    if keys:
        fs.rm(keys)
    fs.invalidate_cache()


def zarr_store(path: WorkPath, *, read_only: bool = False) -> Any:
    """What ``zarr.open_*``/``zarr.create_array`` take: the path string for a local folder, an
    ``FsspecStore`` (with the path's storage options) for a URL."""
    if not is_remote(path):
        return str(path)
    from zarr.storage import FsspecStore

    return FsspecStore.from_url(
        str(path), storage_options=dict(path.storage_options), read_only=read_only
    )


def arrow_filesystem(path: WorkPath) -> tuple[Any, str]:
    """``(pyarrow filesystem, path on it)`` for Ray Train's ``RunConfig(storage_filesystem=,
    storage_path=)``: ``(None, local path)`` locally, the path's fsspec filesystem wrapped for
    pyarrow otherwise (same endpoint and credentials as every other write)."""
    if not is_remote(path):
        return None, str(path)
    import pyarrow.fs as pafs

    return pafs.PyFileSystem(pafs.FSSpecHandler(path.fs)), path.path


def mtime_ns(path: WorkPath) -> int:
    """Modification time in ns (an object's LastModified on object stores)."""
    st = path.stat()
    ns = getattr(st, "st_mtime_ns", None)
    return int(ns) if ns is not None else int(st.st_mtime * 1e9)
