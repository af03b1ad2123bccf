"""Report figures (matplotlib, drawn off-screen) returned as PNG bytes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def prediction_vs_alpha(shifts: pd.DataFrame, explained: str) -> bytes:
    """Mean ± SD over tiles of the explained class's probability against α, per direction."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, g in shifts.groupby("direction", sort=False):
        s = g.groupby("alpha")["prediction"].agg(["mean", "std"])
        ax.plot(s.index, s["mean"], marker="o", label=name)
        ax.fill_between(s.index, s["mean"] - s["std"], s["mean"] + s["std"], alpha=0.15)
    ax.set_xlabel("α (SD of W along the direction)")
    ax.set_ylabel(f"P({explained})")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def effects_chart(effects: pd.DataFrame, direction: str) -> bytes:
    """Standardised effect per unit α with its CI for every feature of one direction."""
    e = effects[effects["direction"] == direction].sort_values("effect")
    fig, ax = plt.subplots(figsize=(5.5, 0.28 * len(e) + 0.8))
    y = np.arange(len(e))
    err = np.vstack([e["effect"] - e["ci_low"], e["ci_high"] - e["effect"]])
    colours = ["#b2182b" if lo > 0 else "#2166ac" if hi < 0 else "#888888"
               for lo, hi in zip(e["ci_low"], e["ci_high"], strict=True)]  # fmt: skip
    ax.barh(y, e["effect"], color=colours, alpha=0.8)
    ax.errorbar(e["effect"], y, xerr=np.nan_to_num(err), fmt="none", ecolor="black", lw=1)
    ax.set_yticks(y, e["feature"], fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("effect: feature SDs per unit α (95% CI, bootstrap over slides)")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def slide_overview(thumb: np.ndarray, boxes: np.ndarray, probs: np.ndarray, title: str) -> bytes:
    """A slide thumbnail with its tiles coloured by the explained class's probability."""
    fig, ax = plt.subplots(figsize=(3.2, 3.2))
    ax.imshow(thumb)
    cmap = plt.get_cmap("RdBu_r")
    for (x0, y0, w, h), p in zip(boxes, probs, strict=True):
        ax.add_patch(Rectangle((x0, y0), w, h, color=cmap(float(p)), alpha=0.45, lw=0))
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    return _png(fig)
