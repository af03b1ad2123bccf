"""How much the built-in classifier's logit moves under stain and scanner-like probes of its
own cohort's real tiles, with and without stain jitter (``classifier.train.stain_jitter``),
next to the planted nuclei's effect in the renderer's counterfactuals (the probes' demo
control, ``judge_probes("nuclei", ...)``). No generator: the cohort is tiled and the
classifier trained (``stylepath run --until train-classifier``), then 12 tiles per slide are
probed. Prints one JSON line.

    PYTHONPATH=. .venv/bin/python scripts/classifier_stain_probes.py SEED SIGMA SLIDES SIZE_UM \
        EPOCHS [ROOT]

``8 1024 2`` is the known-answer test's cohort and training, ``16 2048 3`` the demo's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import config_from_dict
from pipeline.io.tile_store import TileStore
from pipeline.probes.perturb import probe_list, probe_scores, stain_stats
from pipeline.probes.stats import probe_effects
from pipeline.synthetic import stain_counterfactual_logits
from pipeline.synthetic.controls import STAIN_FAMILIES, judge_probes, sensitivity
from tasks.controls import explained_logits, planted_effect
from tasks.make_cohort import make_cohort
from tasks.run import run_all

REPO = Path(__file__).resolve().parents[1]
STRENGTHS = {
    "hematoxylin": [0.7, 0.85, 1.15, 1.3],
    "eosin": [0.7, 0.85, 1.15, 1.3],
    "blur": [0.5, 1.0, 2.0],
    "brightness": [-0.08, 0.08],
}


def main(seed: int, sigma: float, slides: int, size_um: float, epochs: int, root: Path) -> dict:
    table = make_cohort(
        root / f"cohort_{seed}_{slides}", n_slides=slides, seed=seed, size_um=size_um
    )
    cfg = config_from_dict(
        {
            "cohort": str(table),
            "workdir": str(root / f"run_{seed}_{sigma:g}_{slides}_{epochs}"),
            "tiling": {"mpp": 1.0, "size": 64, "min_tissue": 0.5},
            "inversion": {"generator": str(REPO / "models" / "demo_tiny64")},
            "storage": {"tiles_per_chunk": 16, "tiles_per_shard": 256},
            "ray": {"num_cpus": 2},
            "classifier": {
                "train": {"epochs": epochs, "batch_size": 64, "stain_jitter": sigma, "seed": seed}
            },
        }
    )
    run_all(cfg, until="train-classifier")
    logits = explained_logits(cfg)

    def score(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = logits(x)
        return z, 1 / (1 + np.exp(-z))

    store = TileStore(cfg.workdir / "tiles")
    sel = store.read_manifest().groupby("slide_id").sample(n=12, random_state=seed)
    cohort = pd.read_csv(table)
    center = dict(zip(cohort["slide_id"], cohort["center"], strict=True))
    tiles, ids = [], []
    for sid, g in sel.sort_values(["slide_id", "index"]).groupby("slide_id"):
        tiles.append(store.read_tiles(sid, g["index"].to_numpy()))
        ids.append(pd.DataFrame({"tile_id": g["tile_id"], "slide_id": sid, "center": center[sid]}))
    x, ids = np.concatenate(tiles), pd.concat(ids, ignore_index=True)
    centers = ids["center"].to_numpy()
    targets = {c: stain_stats(x[centers == c][:64]) for c in sorted(set(centers))}
    probes = probe_list(STRENGTHS, "histology", sorted(targets))
    eff = probe_effects(probe_scores(x, np.ones(len(x)), ids, probes, score, seed, targets), {})
    planted = planted_effect(cfg)
    swap = stain_counterfactual_logits(cohort.to_dict("records"), logits, cfg.tiling, ["A", "B"])
    swap = swap.pivot_table("logit", "slide_id", "stain_center")
    return {
        "seed": seed,
        "stain_jitter": sigma,
        "slides": slides,
        "epochs": epochs,
        "planted": round(planted, 3),
        "stain_rerender": round(float((swap["A"] - swap["B"]).mean()), 3),
        "stain_probes": round(sensitivity(eff, STAIN_FAMILIES), 3),
        "effects": {
            f"{r.perturbation}@{r.strength:g}": round(r.effect, 2) for r in eff.itertuples()
        },
        "wrong": judge_probes("nuclei", eff, planted),
    }


if __name__ == "__main__":
    a = sys.argv[1:]
    root = Path(a[5]) if len(a) > 5 else Path("work/stain_probes")
    print(json.dumps(main(int(a[0]), float(a[1]), int(a[2]), float(a[3]), int(a[4]), root)))
