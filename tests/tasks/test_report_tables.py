"""The report's bias tables when the analysis had no classifier direction to compare."""

import pandas as pd

from pipeline.reports.html import _table
from tasks.report import CONDITIONAL_COLUMNS, COSINE_COLUMNS, bias_tables


def test_bias_tables_without_a_classifier_direction() -> None:
    """Every sample in one class → no classifier direction, so cohort_bias.parquet has only
    group effects and none of the cosine / conditional columns: the report shows those
    sections empty instead of failing (it raised a KeyError, found with a generator whose
    samples the classifier all called tumor)."""
    only_groups = pd.DataFrame({"direction": ["meta:center=B"], "column": ["center"],
                                "group": ["A"], "feature": ["brightness"], "effect": [0.1],
                                "section": ["group_effect"]})  # fmt: skip
    cos, cond = bias_tables(only_groups)
    assert cos.empty and list(cos.columns) == COSINE_COLUMNS
    assert cond.empty and list(cond.columns) == CONDITIONAL_COLUMNS
    assert "<table" in _table(cos)
    full = pd.concat(
        [
            only_groups,
            pd.DataFrame(
                {
                    "direction": ["classifier"],
                    "other": ["meta:center=B"],
                    "cosine": [0.3],
                    "null_q95": [0.12],
                    "null_q99": [0.16],
                    "above_null": [True],
                    "section": ["cosine"],
                }
            ),
        ]
    )
    cos, cond = bias_tables(full)
    assert cos.to_dict("records") == [{"direction": "classifier", "other": "meta:center=B",
                                       "cosine": 0.3, "null_q95": 0.12, "null_q99": 0.16,
                                       "above_null": True}]  # fmt: skip
    assert cond.empty
