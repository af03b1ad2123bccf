"""The probe families' default strengths and valid ranges (what ``analysis.probes`` accepts);
the perturbations themselves: ``pipeline/probes/perturb.py``."""

from __future__ import annotations

# The default strengths (``analysis.probes``): both directions where a change can go both ways.
DEFAULT_STRENGTHS: dict[str, list[float]] = {
    "hematoxylin": [0.7, 0.85, 1.15, 1.3],
    "eosin": [0.7, 0.85, 1.15, 1.3],
    "blur": [0.5, 1.0, 2.0],
    "jpeg": [70.0, 40.0, 20.0],
    "brightness": [-0.08, 0.08],
    "contrast": [0.8, 1.25],
    "gamma": [0.8, 1.25],
    "noise": [3.0, 8.0],
    "window_level": [-0.08, 0.08],
    "window_width": [0.8, 1.25],
}
# Valid strengths per family (closed intervals): a configured strength outside is an error.
VALID_RANGES: dict[str, tuple[float, float]] = {
    "hematoxylin": (0.1, 3.0),
    "eosin": (0.1, 3.0),
    "blur": (0.0, 20.0),
    "jpeg": (1.0, 100.0),
    "brightness": (-0.5, 0.5),
    "contrast": (0.1, 4.0),
    "gamma": (0.2, 5.0),
    "noise": (0.0, 64.0),
    "window_level": (-0.5, 0.5),
    "window_width": (0.2, 5.0),
}
