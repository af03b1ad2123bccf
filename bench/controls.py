"""The controls of the trust gates at several seeds; prints one JSON object per control and
seed, then a summary JSON on the last line.

Each control (``pipeline/synthetic/controls.py``) is a planted cohort/classifier pair whose
right answer, or the obligation to abstain, is known: a TorchScript black box that reads the
eosin stain of a ``cells`` cohort (name stain, never nuclei, or abstain), one that hashes the
pixels (not supported, nothing specific), one that reads green pen ink the generator never saw
(not supported), and the demo's built-in classifier of planted nuclear density and size (name
them, or abstain), and the same black box reading eosin on the demo cohort. Every run is the
whole job (``stylepath run``) with ``configs/demo.yaml``; the eosin and demo runs also judge
the probes (``judge_probes``: eosin scaling, not blur; stain small next to the planted nuclei).

    PYTHONPATH=. python bench/controls.py [--seeds 0 1 2] [--scale test|demo]
        [--controls stain unrelated undrawable demo] [--root work/bench/controls]

``--scale test`` (default) runs the test suite's size: 8 slides of 1 mm², ~3 min a control on
2 cores; ``demo`` the demo's 16 slides of 4 mm².
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.synthetic.controls import CONTROLS  # noqa: E402
from tasks.controls import SCALES, run_controls  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--scale", choices=sorted(SCALES), default="test")
    p.add_argument("--controls", nargs="+", choices=CONTROLS, default=list(CONTROLS))
    p.add_argument("--root", type=Path, default=REPO / "work" / "bench" / "controls")
    args = p.parse_args()
    results = []
    for seed in args.seeds:
        for r in run_controls(args.root, seed, args.scale, tuple(args.controls)):
            print(json.dumps(r), flush=True)
            results.append(r)
    summary = {
        "benchmark": "controls",
        "scale": args.scale,
        "seeds": args.seeds,
        "passed": {
            c: sum(r["passed"] for r in results if r["control"] == c) for c in args.controls
        },
        "runs": {c: sum(r["control"] == c for r in results) for c in args.controls},
        "verdicts": {
            c: [r["verdict"] for r in results if r["control"] == c] for c in args.controls
        },
        "probes_passed": {
            c: sum(r["probes_passed"] for r in results if r["control"] == c) for c in args.controls
        },
        "all_passed": all(r["passed"] for r in results),
        "all_probes_passed": all(r["probes_passed"] for r in results),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
