"""The controls of the trust gates, end to end (``stylepath run`` with the demo's settings at
the suite's size): planted cohort/classifier pairs whose right answer, or the obligation to
abstain, is known (``pipeline/synthetic/controls.py``; the demo's own control is in
``test_known_answer.py``). Their rules were fixed before the gates were tuned;
``bench/controls.py`` runs them at three seeds."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.controls import run_controls


@pytest.fixture(scope="module")
def results(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("controls")
    return {
        r["control"]: r
        for r in run_controls(
            root, seed=0, scale="test", controls=("stain", "unrelated", "undrawable")
        )
    }


@pytest.mark.parametrize("control", ["stain", "unrelated", "undrawable"])
def test_control_obeys_its_rule(results, control: str) -> None:
    r = results[control]
    print(pd.Series(r))
    assert r["passed"], r["wrong"]


def test_a_one_slide_cohort_gets_reasons_not_a_crash(tmp_path, ray_local) -> None:
    """One slide: no between-slide CI, no metadata direction; the run finishes and the
    classifier direction is not supported, saying why."""
    from tasks.controls import BLACKBOX, _blackbox, control_config
    from tasks.make_cohort import make_cohort
    from tasks.run import run_all

    cfg = control_config(tmp_path, "stain", seed=0, extra=["inversion.replicates=1"])
    make_cohort(cfg.cohort.parent, n_slides=1, seed=0, size_um=512.0, renderer="cells")
    assert BLACKBOX["stain"] == "eosin"
    cfg = _blackbox(cfg, "stain")
    run_all(cfg)
    v = pd.read_parquet(cfg.workdir / "analysis" / "verdicts.parquet").set_index("direction")
    print(v[["verdict", "reasons"]])
    assert v.loc["classifier", "verdict"] == "not_supported"
    assert "faithful slides" in v.loc["classifier", "reasons"]  # 1 (or 0) < 2
    assert (cfg.workdir / "report" / "index.html").is_file()
