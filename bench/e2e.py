"""Benchmark the cohort job end to end (issue: a re-run costs only what changed); prints JSON.

1. ``first``: the demo cohort (``make-cohort``, not timed) and ``stylepath run`` on it from an
   empty workdir: per-stage wall time from the run's manifest, and the whole command's wall
   time (interpreter, imports and Ray start-up included).
2. ``unchanged``: the same command again — target < 5 % of the first run.
3. ``grown``: ``--grow`` (10 %) more slides in the cohort (rendered first, not timed), the same
   command — target ≤ 25 % of the first run. Only the new slides should be tiled, scored,
   inverted and shifted; the cohort-level directions are re-fitted and reports re-aggregated.
4. ``new_classifier``: the grown cohort with another classifier (``classifier.train.seed``
   +1): the classifier is retrained and every tile re-scored, none re-inverted (the
   latents do not depend on the classifier); directions, shifts and reports are redone.

Each run is its own process (``python -m tasks.cli run``), as a scheduled job would be.

    PYTHONPATH=. python bench/e2e.py [--config configs/demo.yaml] [--slides 16] [--grow 0.1]
        [--workdir work/bench/e2e] [--set KEY=VALUE ...]

(``PYTHONPATH=.``: this checkout's code, also when the venv's editable install is another one.)
The workdir is emptied first. Timings on a shared machine include whatever else runs on it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_job(config: Path, overrides: list[str]) -> dict:
    """``stylepath run`` in a fresh process: its wall time and its manifest's stages."""
    cmd = [sys.executable, "-m", "tasks.cli", "run", str(config)]
    for kv in overrides:
        cmd += ["--set", kv]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"stylepath run failed ({out.returncode}):\n{out.stdout}\n{out.stderr[-4000:]}")
    return {"wall_s": round(wall, 1)}


def latest_manifest(workdir: Path) -> dict:
    runs = sorted(p for p in (workdir / "runs").iterdir() if (p / "manifest.json").is_file())
    return json.loads((runs[-1] / "manifest.json").read_text())


def stages(manifest: dict) -> dict:
    keep = (
        "slides",
        "tiles",
        "tiles_read",
        "new_or_changed_slides",
        "reused",
        "n_selected",
        "n_inverted",
        "n_rescored",
        "n_skipped",
        "parts_reused",
        "parts_rescored",
        "directions",
    )
    out = {}
    for s in manifest["stages"]:
        out[s["name"]] = {"status": s["status"], "seconds": round(s["seconds"], 1)}
        if s["reason"]:
            out[s["name"]]["reason"] = s["reason"]
        facts = {k: v for k, v in s.get("summary", {}).items() if k in keep}
        if facts:
            out[s["name"]]["facts"] = facts
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "demo.yaml")
    ap.add_argument("--slides", type=int, default=16, help="cohort size (the demo's: 16)")
    ap.add_argument("--grow", type=float, default=0.1, help="share of new slides for run 3")
    ap.add_argument("--workdir", type=Path, default=REPO / "work" / "bench" / "e2e")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from pipeline.config import load_config
    from tasks.make_cohort import grow_cohort, make_cohort

    work = args.workdir.absolute()
    shutil.rmtree(work, ignore_errors=True)
    cohort_dir = work / "cohort"
    workdir = work / "workdir"
    base = [f"workdir={workdir}", *args.overrides]
    cfg = load_config(args.config, base)  # a bad config or override fails here, before work
    classifier_seed = cfg.classifier.train.seed
    t0 = time.perf_counter()
    table = make_cohort(cohort_dir, n_slides=args.slides, seed=0, size_um=2048.0)
    cohort_s = time.perf_counter() - t0
    import ray

    ray.shutdown()  # make_cohort's Ray: the timed runs start their own

    result: dict = {
        "config": str(args.config),
        "slides": args.slides,
        "cpus": os.cpu_count(),
        "load_avg_before": os.getloadavg()[0],
        "make_cohort_s": round(cohort_s, 1),
    }
    first = run_job(args.config, [*base, f"cohort={table}"])
    first["stages"] = stages(latest_manifest(workdir))
    result["first"] = first

    again = run_job(args.config, [*base, f"cohort={table}"])
    again["stages"] = stages(latest_manifest(workdir))
    again["ratio"] = round(again["wall_s"] / first["wall_s"], 4)
    result["unchanged"] = again

    n_new = max(1, math.ceil(args.grow * args.slides))
    grown_table = grow_cohort(table, work / "grown", n_new=n_new, seed=1000, size_um=2048.0)
    ray.shutdown()
    grown = run_job(args.config, [*base, f"cohort={grown_table}"])
    grown["stages"] = stages(latest_manifest(workdir))
    grown["ratio"] = round(grown["wall_s"] / first["wall_s"], 4)
    grown["new_slides"] = n_new
    result["grown"] = grown
    reseed = [*base, f"cohort={grown_table}", f"classifier.train.seed={classifier_seed + 1}"]
    other = run_job(args.config, reseed)
    other["stages"] = stages(latest_manifest(workdir))
    other["ratio"] = round(other["wall_s"] / first["wall_s"], 4)
    result["new_classifier"] = other
    result["targets"] = {
        "unchanged_ratio_lt": 0.05,
        "grown_ratio_le": 0.25,
        "unchanged_met": again["ratio"] < 0.05,
        "grown_met": grown["ratio"] <= 0.25,
    }
    result["load_avg_after"] = os.getloadavg()[0]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
