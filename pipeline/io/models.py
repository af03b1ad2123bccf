"""Classifier model files: TorchScript archives, safetensors weights and their JSON cards.

Nothing here unpickles arbitrary objects: TorchScript archives are read with
``torch.jit.load`` and weights with safetensors. A model card is the JSON beside a model file
(``model.pt`` → ``model.json``) with its input size, normalisation and class names.
"""

from __future__ import annotations

import io
import json
from typing import Any

import torch

from pipeline.io.checkpoints import load_weights, save_weights
from pipeline.io.files import atomic_write, atomic_write_json
from pipeline.io.paths import WorkPath, as_path, is_remote

__all__ = [
    "card_path",
    "load_torchscript",
    "load_weights",
    "read_card",
    "save_torchscript",
    "save_weights",
    "write_card",
]


def card_path(model_path: WorkPath | str) -> WorkPath:
    """The JSON card beside a model file."""
    return as_path(model_path).with_suffix(".json")


def read_card(path: WorkPath | str) -> dict[str, Any] | None:
    """A model card, or None when there is none; an unreadable card is an error (ValueError)."""
    path = as_path(path)
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable model card ({exc})") from None
    if not isinstance(card, dict):
        raise ValueError(f"{path}: model card must be a JSON object")
    return card


def write_card(path: WorkPath | str, card: dict[str, Any]) -> None:
    atomic_write_json(path, card)


def load_torchscript(
    path: WorkPath | str, device: str | torch.device = "cpu"
) -> torch.jit.ScriptModule:
    """``torch.jit.load`` (raises whatever torch raises for a file that is not TorchScript)."""
    path = as_path(path)
    if is_remote(path):
        return torch.jit.load(io.BytesIO(path.read_bytes()), map_location=device)
    return torch.jit.load(str(path), map_location=device)


def save_torchscript(module: torch.jit.ScriptModule, path: WorkPath | str) -> None:
    atomic_write(path, lambda tmp: torch.jit.save(module, str(tmp)))
