"""What the demo classifier really uses: render each slide of a synthetic cohort again with
the planted nuclear density and nuclear size set to their normal / tumor values one at a
time (same slide seed, stain and center), and with each center's stain (same nuclei), tile
it, and print the classifier's mean logit per combination. This is the ground truth the
known-answer test's biomarker ranking and bias finding should agree with (docs/results.md,
"What the classifiers use"), independent of any generator.

    PYTHONPATH=. .venv/bin/python scripts/classifier_counterfactuals.py work/demo/config.yaml
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch
import yaml

from pipeline.classifier.contract import load_classifier, resolve_spec, tiles_to_tensor
from pipeline.config import config_from_dict
from pipeline.synthetic import counterfactual_logits, stain_counterfactual_logits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", help="the run's resolved config (workdir/config.yaml)")
    ap.add_argument("--side-um", type=float, default=512.0, help="rendered area per slide")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with open(args.config) as f:
        cfg = config_from_dict(yaml.safe_load(f))
    clf = load_classifier(resolve_spec(cfg.classifier, cfg.workdir, cfg.tiling.size, 3))

    def score(tiles: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return clf.score(clf(tiles_to_tensor(tiles))).numpy()

    specs = pd.read_csv(cfg.cohort).to_dict("records")
    table = counterfactual_logits(specs, score, cfg.tiling, args.side_um)
    print(f"mean logit of {clf.explained_class!r} (rows: planted density; columns: size)")
    print(table.pivot_table("logit", "density", "size").round(2).to_string())
    print(table.pivot_table("logit", ["center", "density"], "size").round(2).to_string())
    centers = sorted({str(s["center"]) for s in specs})
    stains = stain_counterfactual_logits(specs, score, cfg.tiling, centers, args.side_um)
    print("mean logit by the slide's own center (rows) and the stain rendered (columns)")
    print(stains.pivot_table("logit", "center", "stain_center").round(2).to_string())


if __name__ == "__main__":
    main()
