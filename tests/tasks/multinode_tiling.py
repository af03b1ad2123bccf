"""Run by test_multinode_faults.py in its own process: tile a cohort on a 3-node local Ray
cluster (a head with no CPUs, two 1-CPU workers), kill a worker node once the first slide is
committed, then tile the same cohort on plain local Ray; print both outcomes as JSON."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's code, not the
# installed one (`python script.py` puts only the script's folder on sys.path)


def main(root: Path) -> None:
    import ray
    from node_killer import NodeKiller  # beside this script (on sys.path as its folder)
    from ray.cluster_utils import Cluster

    from pipeline.config import config_from_dict
    from pipeline.io.tile_store import TileStore
    from tasks.make_cohort import make_cohort
    from tasks.tile import run_tiling

    table = make_cohort(root / "cohort", n_slides=6, seed=5, size_um=1536)
    tiling = {"mpp": 1.0, "size": 64, "min_tissue": 0.5}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray_cfg = {"address": cluster.address, "tiles_per_task": 64, "max_retries": 3}
    cfg = config_from_dict(
        {"cohort": str(table), "workdir": str(root / "faulty"), "tiling": tiling, "ray": ray_cfg}
    )
    with NodeKiller(cluster, workers[1], cfg.workdir / "tiles" / "parts", poll_s=0.05) as killer:
        faulty = run_tiling(cfg)
    ray.shutdown()
    cluster.shutdown()

    clean_cfg = config_from_dict(
        {
            "cohort": str(table),
            "workdir": str(root / "clean"),
            "tiling": tiling,
            "ray": {"num_cpus": 2},
        }
    )
    clean = run_tiling(clean_cfg)
    ray.shutdown()

    a, b = TileStore(cfg.workdir / "tiles"), TileStore(clean_cfg.workdir / "tiles")
    ma, mb = a.read_manifest(), b.read_manifest()
    same_pixels = all(
        np.array_equal(a.read_tiles(s), b.read_tiles(s)) for s in mb["slide_id"].unique()
    )
    print(
        json.dumps(
            {
                "killed_after_parts": killer.after_parts,
                "faulty_ok": faulty.n_ok,
                "faulty_failed": faulty.n_failed,
                "clean_ok": clean.n_ok,
                "n_tiles": [len(ma), len(mb)],
                "duplicated_ids": int(ma["tile_id"].duplicated().sum()),
                "same_manifest": bool(ma.reset_index(drop=True).equals(mb.reset_index(drop=True))),
                "same_pixels": bool(same_pixels),
            }
        )
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
