"""What the per-part stages (predict, invert, analyze) share: content keys of their inputs."""

from __future__ import annotations

import hashlib
import json

import numpy as np


def content_key(*items: object, size: int = 20) -> str:
    """A hex key of ``items`` (arrays by their bytes, everything else as JSON): equal inputs,
    equal keys; the first ``size`` hex digits of a SHA-256."""
    h = hashlib.sha256()
    for it in items:
        if isinstance(it, np.ndarray):
            h.update(it.tobytes())
        else:
            h.update(json.dumps(it, sort_keys=True, default=str).encode())
        h.update(b"|")
    return h.hexdigest()[:size]
