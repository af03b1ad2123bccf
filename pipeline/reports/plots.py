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
    """Standardised effect per unit α with its CI for every feature of one direction:
    specific features (``specific``) in colour, the others grey, and the random directions'
    scale at the direction's σ (``null_rms``) as a band around 0."""
    e = effects[effects["direction"] == direction].sort_values("effect")
    fig, ax = plt.subplots(figsize=(5.5, 0.28 * len(e) + 0.8))
    y = np.arange(len(e))
    err = np.vstack([e["effect"] - e["ci_low"], e["ci_high"] - e["effect"]])
    specific = e["specific"].astype(bool) if "specific" in e else pd.Series(False, e.index)
    colours = [
        ("#b2182b" if v > 0 else "#2166ac") if s else "#bbbbbb"
        for v, s in zip(e["effect"], specific, strict=True)
    ]
    ax.barh(y, e["effect"], color=colours, alpha=0.85)
    ax.errorbar(e["effect"], y, xerr=np.nan_to_num(err), fmt="none", ecolor="black", lw=1)
    if "null_rms" in e:
        ax.scatter(e["null_rms"], y, marker="|", color="#555555", s=60, label="random ±RMS")
        ax.scatter(-e["null_rms"], y, marker="|", color="#555555", s=60)
        ax.legend(fontsize=7, loc="lower right")
    ax.set_yticks(y, e["feature"], fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("effect: feature SDs per unit α (95% CI); colour: specific to the direction")
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


def dose_response(probes: pd.DataFrame, identities: dict[str, float]) -> bytes:
    """The mean logit change (95 % CI) against each perturbation family's strength, over all
    tiles; the identity strength is 0 by definition."""
    p = probes[(probes["group"] == "all") & (probes["family"] != "stain_normalise")]
    families = list(dict.fromkeys(p["family"]))
    cols = min(4, max(1, len(families)))
    rows = -(-len(families) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.2 * rows), squeeze=False)
    for ax, fam in zip(axes.ravel(), families, strict=False):
        f = p[p["family"] == fam].sort_values("strength")
        x = np.r_[f["strength"].to_numpy(), identities[fam]]
        y = np.r_[f["effect"].to_numpy(), 0.0]
        order = np.argsort(x)
        ax.plot(x[order], y[order], marker="o", color="#2166ac")
        err = np.vstack([f["effect"] - f["ci_low"], f["ci_high"] - f["effect"]])
        ax.errorbar(f["strength"], f["effect"], yerr=np.nan_to_num(err), fmt="none", ecolor="k")
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title(fam, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(families) :]:
        ax.axis("off")
    fig.supylabel("Δ logit (tile perturbed − tile)", fontsize=8)
    fig.tight_layout()
    return _png(fig)
