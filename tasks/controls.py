"""Run the controls of the trust gates (``pipeline/synthetic/controls.py``): render each
control's cohort, calibrate its black box on the cohort's tiles, run the whole job
(``stylepath run``) with the demo's settings and judge the verdicts against the control's rule.

``stain`` and ``unrelated`` share one ``cells`` cohort, ``demo`` and ``stain_he`` the demo
cohort (one tiling and one inversion each: a second classifier only re-scores the kept
latents); the encoders trained for the first control are copied into the others' workdirs
(their cache key is the generator and encoder config, so they are the encoders those runs
would train).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import Config, config_from_dict, load_config
from pipeline.io.tile_store import TileStore
from pipeline.synthetic.blackboxes import calibrated, save_blackbox
from pipeline.synthetic.controls import CONTROLS, judge, judge_probes, named
from tasks.make_cohort import make_cohort
from tasks.run import run_all

REPO = Path(__file__).resolve().parents[1]
# Cohort of each control: renderer and the share of slides with pen ink.
COHORTS = {
    "stain": ("cells", 0.0),
    "unrelated": ("cells", 0.0),
    "undrawable": ("he", 0.5),
    "demo": ("he", 0.0),
    "stain_he": ("he", 0.0),
}
BLACKBOX = {
    "stain": "eosin",
    "unrelated": "hash",
    "undrawable": "ink",
    "demo": None,
    "stain_he": "eosin",
}
# A control run on the cohort of an earlier one starts from a copy of its workdir.
SHARES = {"unrelated": "stain", "stain_he": "demo"}
# ``test``: the suite's size (8 slides of 1 mm², fewer samples and steps); ``demo``: the
# demo's own settings on 16 slides of 2 mm × 2 mm.
SCALES: dict[str, dict[str, Any]] = {
    "test": {
        "slides": 8,
        "size_um": 1024.0,
        "set": [
            "classifier.train.epochs=2",
            "inversion.encoder.steps=60",
            "inversion.selection.n=12",
            "analysis.n_samples=1500",
            "analysis.tiles_per_slide=12",
            "analysis.n_boot=500",
            "analysis.batch_size=24",
        ],
    },
    "demo": {"slides": 16, "size_um": 2048.0, "set": []},
}


def control_config(
    root: Path, control: str, seed: int, scale: str = "test", extra: list[str] | None = None
) -> Config:
    """``configs/demo.yaml`` for one control's cohort and workdir under ``root``, its seeds
    (cohort, inversion, encoder, analysis) all ``seed``."""
    renderer, ink = COHORTS[control]
    cohort = root / f"cohort_{renderer}_{ink:g}_{seed}" / "cohort.csv"
    sets = [
        f"cohort={cohort}",
        f"workdir={root / f'work_{control}_{seed}'}",
        f"inversion.generator={REPO / 'models' / 'demo_tiny64'}",
        f"inversion.seed={seed}",
        f"inversion.encoder.seed={seed}",
        f"analysis.seed={seed}",
        *SCALES[scale]["set"],
        *(extra or []),
    ]
    return load_config(REPO / "configs" / "demo.yaml", sets)


def _cohort(cfg: Config, control: str, seed: int, scale: str) -> None:
    renderer, ink = COHORTS[control]
    s = SCALES[scale]
    make_cohort(
        cfg.cohort.parent,
        n_slides=s["slides"],
        seed=seed,
        size_um=s["size_um"],
        renderer=renderer,
        ink_share=ink,
        ray_cfg=cfg.ray,
    )


def _blackbox(cfg: Config, control: str) -> Config:
    """The control's TorchScript model, calibrated on the cohort's tiles (run_all until
    ``tile`` first), set as ``classifier.model``; the demo control keeps the built-in."""
    name = BLACKBOX[control]
    if name is None:
        return cfg
    run_all(cfg, until="tile")
    store = TileStore(cfg.workdir / "tiles")
    tiles = np.concatenate(
        [store.read_tiles(str(s)) for s in store.read_manifest()["slide_id"].unique()]
    )
    path = save_blackbox(calibrated(name, tiles), cfg.workdir / "blackbox" / f"{name}.pt")
    data = cfg.dump()
    data["classifier"]["model"] = str(path)
    return config_from_dict(data)


def prime_encoders(src: Path, dst: Path) -> None:
    """Copy the cached encoders of one workdir's inversion (and its replicates) into another's."""
    for f in (src / "inversion").rglob("encoder.*"):
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            shutil.copy2(f, target)


def explained_logits(cfg: Config) -> Callable[[np.ndarray], np.ndarray]:
    """The run's classifier as a function of uint8 RGB tiles [N, H, W, 3] → explained logits."""
    import torch

    from pipeline.classifier.contract import load_classifier, resolve_spec, tiles_to_tensor

    clf = load_classifier(resolve_spec(cfg.classifier, cfg.workdir, cfg.tiling.size, 3))

    def score(tiles: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return clf.score(clf(tiles_to_tensor(tiles))).numpy()

    return score


def counterfactual_means(cfg: Config) -> pd.Series:
    """The classifier's mean logit over the cohort's slides rendered again with each
    (density, size) of normal / tumor values (``pipeline.synthetic.counterfactual_logits``)."""
    from pipeline.synthetic import counterfactual_logits

    specs = pd.read_csv(cfg.cohort).to_dict("records")
    table = counterfactual_logits(specs, explained_logits(cfg), cfg.tiling)
    return table.groupby(["density", "size"])["logit"].mean()


def planted_effect(cfg: Config) -> float:
    """The smallest mean logit change the planted nuclear density or size alone makes in the
    renderer's counterfactuals of the cohort's slides (the demo's built-in classifier)."""
    mean = counterfactual_means(cfg)
    base = mean["normal", "normal"]
    return float(min(mean["normal", "tumor"], mean["tumor", "normal"]) - base)


def probes_wrong(cfg: Config, control: str) -> list[str]:
    """The probes' rules (``judge_probes``) for the controls whose classifier reads a known
    property: eosin for ``stain`` and ``stain_he``, the planted nuclei for ``demo``."""
    path = cfg.workdir / "analysis" / "perturbations.parquet"
    reader = {"stain": "eosin", "stain_he": "eosin", "demo": "nuclei"}.get(control)
    if reader is None or not path.is_file():
        return []
    probes = pd.read_parquet(path)
    planted = planted_effect(cfg) if reader == "nuclei" else None
    return judge_probes(reader, probes, planted)


def summarise(cfg: Config, control: str) -> dict[str, Any]:
    """The control's verdict, named and top specific features, gate figures and what it got
    wrong, from the run's ``analysis/`` tables."""
    out = cfg.workdir / "analysis"
    verdicts = pd.read_parquet(out / "verdicts.parquet")
    effects = pd.read_parquet(out / "feature_effects.parquet")
    row = (
        verdicts.set_index("direction").loc["classifier"]
        if (verdicts["direction"] == "classifier").any()
        else None
    )
    top = effects[effects["direction"] == "classifier"].nsmallest(3, "rank")
    gates = (
        {}
        if row is None
        else {
            k: (None if pd.isna(v) else round(float(v), 4))
            for k, v in row.items()
            if k.startswith("gate_")
        }
    )
    wrong = judge(control, verdicts, effects)
    probes = probes_wrong(cfg, control)
    return {
        "control": control,
        "verdict": None if row is None else row["verdict"],
        "reasons": None if row is None else row["reasons"],
        "named": named(verdicts, effects, "classifier"),
        "top_specific": [
            {
                "feature": r.feature,
                "effect": round(float(r.effect), 3),
                "specific_z": round(float(r.specific_z), 2),
                "specific_q": round(float(r.specific_q), 4),
            }
            for r in top.itertuples()
        ],
        "gates": gates,
        "wrong": wrong,
        "passed": not wrong,
        "probes_wrong": probes,
        "probes_passed": not probes,
    }


def run_controls(
    root: Path, seed: int, scale: str = "test", controls: tuple[str, ...] = CONTROLS
) -> list[dict[str, Any]]:
    """Each control at ``seed``: its summary (``summarise``) and wall seconds."""
    root = Path(root).absolute()
    results, first = [], None
    for control in controls:
        t0 = time.perf_counter()
        cfg = control_config(root, control, seed, scale)
        _cohort(cfg, control, seed, scale)
        if SHARES.get(control) in controls:  # the same cohort: reuse its work
            src = control_config(root, SHARES[control], seed, scale).workdir
            if not cfg.workdir.exists():
                shutil.copytree(
                    src,
                    cfg.workdir,
                    symlinks=True,
                    ignore=shutil.ignore_patterns("analysis", "report"),
                )
        if first is not None:
            prime_encoders(first, cfg.workdir)
        cfg = _blackbox(cfg, control)
        run_all(cfg)
        first = first or cfg.workdir
        results.append(
            {**summarise(cfg, control), "seed": seed, "seconds": round(time.perf_counter() - t0, 1)}
        )
    return results
