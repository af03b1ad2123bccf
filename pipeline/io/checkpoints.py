"""Checkpoints and exported generators: the only code that writes model weights.

Training checkpoints are torch state dicts (tensors and plain numbers, loaded with
``weights_only=True``: no pickled code). The exported generator is ``generator.safetensors``
(G_ema weights) plus ``generator.json`` (architecture), enough to rebuild it anywhere.
"""

from __future__ import annotations

import io
import json
from typing import Any

import torch
from safetensors.torch import load, load_file, save_file

from pipeline.io.files import atomic_write, atomic_write_json
from pipeline.io.paths import WorkPath, as_path, is_remote

STATE_FILE = "state.pt"


class CheckpointError(ValueError):
    """A checkpoint or exported model is missing, corrupt or does not match."""


def save_state(folder: WorkPath | str, state: dict[str, Any]) -> None:
    atomic_write(as_path(folder) / STATE_FILE, lambda tmp: torch.save(state, tmp))


def load_state(folder: WorkPath | str) -> dict[str, Any]:
    path = as_path(folder) / STATE_FILE
    try:
        src = io.BytesIO(path.read_bytes()) if is_remote(path) else path
        return torch.load(src, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint file missing") from None
    except Exception as exc:  # noqa: BLE001 - truncated zip, bad pickle opcodes, …
        raise CheckpointError(f"{path}: corrupt checkpoint ({exc})") from None


def save_weights(
    path: WorkPath | str, weights: dict[str, torch.Tensor], half: bool = False
) -> None:
    """A state dict as safetensors (float16 with ``half``: half the bytes, for models/)."""
    tensors = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in weights.items()
    }
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


def load_weights(path: WorkPath | str) -> dict[str, torch.Tensor]:
    """A safetensors state dict, floating tensors as float32."""
    path = as_path(path)
    try:
        raw = load(path.read_bytes()) if is_remote(path) else load_file(str(path))
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot read weights ({exc})") from None
    return {k: v.float() if v.is_floating_point() else v for k, v in raw.items()}


def save_generator(
    folder: WorkPath | str,
    weights: dict[str, torch.Tensor],
    meta: dict[str, Any],
    half: bool = False,
) -> None:
    """Write ``generator.safetensors`` + ``generator.json`` atomically (json last)."""
    folder = as_path(folder)
    save_weights(folder / "generator.safetensors", weights, half)
    atomic_write_json(folder / "generator.json", meta)


def load_generator_files(
    folder: WorkPath | str,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    folder = as_path(folder)
    meta_path, weights_path = folder / "generator.json", folder / "generator.safetensors"
    if not meta_path.is_file() or not weights_path.is_file():
        raise CheckpointError(f"{folder}: no exported generator (generator.json/.safetensors)")
    try:
        meta = json.loads(meta_path.read_text())
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{meta_path}: cannot read the exported generator ({exc})") from None
    return load_weights(weights_path), meta
