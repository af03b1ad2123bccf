"""Atomic writes on a local disk: permissions as a plain write gives them, nothing left on error."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import torch

from pipeline.io.checkpoints import load_weights, save_weights
from pipeline.io.files import atomic_write, staging_dir


def test_exported_weights_are_readable_like_any_written_file(tmp_path: Path) -> None:
    # safetensors creates its files 0600; an export on shared storage must be readable by the
    # group that reads the models, as a plain open() would have made it.
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    path = tmp_path / "generator.safetensors"
    save_weights(path, {"w": torch.ones(3)}, half=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == stat.S_IMODE(plain.stat().st_mode), oct(mode)
    assert torch.equal(load_weights(path)["w"], torch.ones(3))


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "report.parquet"
    path.write_text("old")

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.parquet"]


def test_a_staged_folder_gets_a_plain_folders_mode_and_goes_away(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with staging_dir() as d:
        (d / "state.pt").write_bytes(b"x")
        assert stat.S_IMODE(d.stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert not d.exists()
