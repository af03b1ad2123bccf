"""Checkpoints and exported generators: the only code that writes model weights.

Training checkpoints are torch state dicts (tensors and plain numbers, loaded with
``weights_only=True``: no pickled code). The exported generator is ``generator.safetensors``
(G_ema weights) plus ``generator.json`` (architecture), enough to rebuild it anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pipeline.io.files import atomic_write, atomic_write_json

STATE_FILE = "state.pt"


class CheckpointError(ValueError):
    """A checkpoint or exported model is missing, corrupt or does not match."""


def save_state(folder: Path, state: dict[str, Any]) -> None:
    atomic_write(Path(folder) / STATE_FILE, lambda tmp: torch.save(state, tmp))


def load_state(folder: Path) -> dict[str, Any]:
    path = Path(folder) / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint file missing") from None
    except Exception as exc:  # noqa: BLE001 - truncated zip, bad pickle opcodes, …
        raise CheckpointError(f"{path}: corrupt checkpoint ({exc})") from None


def save_weights(path: Path, weights: dict[str, torch.Tensor], half: bool = False) -> None:
    """A state dict as safetensors (float16 with ``half``: half the bytes, for models/)."""
    tensors = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in weights.items()
    }
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp)))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors state dict, floating tensors as float32."""
    try:
        raw = load_file(str(path))
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot read weights ({exc})") from None
    return {k: v.float() if v.is_floating_point() else v for k, v in raw.items()}


def save_generator(folder: Path, weights: dict[str, torch.Tensor], meta: dict[str, Any],
                   half: bool = False) -> None:  # fmt: skip
    """Write ``generator.safetensors`` + ``generator.json`` atomically (json last)."""
    save_weights(Path(folder) / "generator.safetensors", weights, half)
    atomic_write_json(Path(folder) / "generator.json", meta)


def load_generator_files(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    folder = Path(folder)
    meta_path, weights_path = folder / "generator.json", folder / "generator.safetensors"
    if not meta_path.is_file() or not weights_path.is_file():
        raise CheckpointError(f"{folder}: no exported generator (generator.json/.safetensors)")
    try:
        meta = json.loads(meta_path.read_text())
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{meta_path}: cannot read the exported generator ({exc})") from None
    return load_weights(weights_path), meta
