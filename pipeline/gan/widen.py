"""Function-preserving widening: warm-start a wider network from a trained narrower one.

Net2WiderNet (Chen et al. 2016) with zero fan-in instead of copied units: the widened
network computes exactly what the trained one did, and the added channels start learning
at once. For every weight ``[out, in, ...]`` of this package's equalised-lr layers (run-time
gain ∝ 1/√in):

- the trained block ``[:out_old, :in_old]`` is copied, times √(in_new/in_old), so that the
  run-time weight (stored weight × gain) is unchanged;
- the trained outputs' weights on the added inputs are zero, so the added channels do not
  reach anything the trained network computed;
- the added outputs keep the new network's fresh initialisation (random, so their
  activations, and with them every gradient into the zero block, are non-zero).

Biases, the learned constant and other vectors keep their trained entries and the fresh
initialisation for the added ones (0 for conv biases, 1 for the style affines' biases).
Weight demodulation sums over the inputs, where the added ones contribute zero, so
modulated convolutions are preserved too. The coarsest resolution's width must stay: D's
last conv reads the minibatch-SD channel after those features.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from pipeline.gan.presets import NetworkSpec


def widening_problem(old: NetworkSpec, new: NetworkSpec) -> str | None:
    """Why ``old`` cannot be widened into ``new`` (``None`` when it can, or they are equal)."""
    for field in (f.name for f in dataclasses.fields(NetworkSpec) if f.name != "channels"):
        a, b = getattr(old, field), getattr(new, field)
        if a != b:
            return f"{field} differs ({a} vs {b}); only channel counts may grow"
    if sorted(old.channels) != sorted(new.channels):
        return f"resolutions differ ({sorted(old.channels)} vs {sorted(new.channels)})"
    low = min(old.channels)
    if old.channels[low] != new.channels[low]:
        # D's last conv reads the minibatch-SD channel after the 4 px features
        return f"channels at {low} px differ ({old.channels[low]} vs {new.channels[low]})"
    narrower = [r for r in sorted(old.channels) if new.channels[r] < old.channels[r]]
    if narrower:
        r = narrower[0]
        return (
            f"{old.channels[r]} channels at {r} px would shrink to {new.channels[r]}; "
            "only widening preserves the trained function"
        )
    return None


def widen_tensor(name: str, old: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
    """One parameter or buffer: the trained values embedded in the fresh, larger tensor."""
    if old.shape == fresh.shape:
        return old.to(fresh.dtype).clone()
    if old.ndim != fresh.ndim or any(a > b for a, b in zip(old.shape, fresh.shape, strict=True)):
        raise ValueError(f"{name}: cannot widen {tuple(old.shape)} to {tuple(fresh.shape)}")
    out = fresh.detach().clone()
    old = old.to(fresh.dtype)
    if name.endswith("weight") and old.ndim >= 2:
        o, i = old.shape[:2]
        rest = tuple(slice(0, s) for s in old.shape[2:])  # kernels never change size
        out[:o, i:] = 0.0  # the trained outputs ignore the added inputs
        out[(slice(0, o), slice(0, i), *rest)] = old * math.sqrt(fresh.shape[1] / i)
        return out
    out[tuple(slice(0, s) for s in old.shape)] = old
    return out


def widen_state_dict(
    old: dict[str, torch.Tensor], fresh: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """A trained state dict widened into the shapes of ``fresh`` (a newly built, wider
    module's state dict, whose initialisation fills the added channels)."""
    missing = sorted(set(fresh) ^ set(old))
    if missing:
        raise ValueError(f"state dicts differ in keys: {missing[:5]}")
    return {k: widen_tensor(k, old[k], fresh[k]) for k in fresh}
