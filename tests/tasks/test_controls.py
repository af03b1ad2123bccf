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
