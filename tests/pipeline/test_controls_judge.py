"""The controls' rules (``pipeline.synthetic.controls.judge``) fail the answers they forbid."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.synthetic.controls import judge, named


def tables(
    verdict: str,
    specific: dict[str, bool],
    reasons: str = "a gate failed",
    extra: list[tuple[str, str]] = (),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Verdicts of a classifier direction (+ ``extra`` (direction, kind) rows, not supported)
    and its effects, ranked in the order of ``specific``."""
    v = pd.DataFrame(
        [{"direction": "classifier", "kind": "classifier", "verdict": verdict, "reasons": reasons}]
        + [
            {"direction": d, "kind": k, "verdict": "not_supported", "reasons": "x"}
            for d, k in extra
        ]
    )
    e = pd.DataFrame(
        [
            {"direction": "classifier", "feature": f, "specific": s, "rank": i + 1}
            for i, (f, s) in enumerate(specific.items())
        ]
    )
    return v, e


def test_named_features_are_the_specific_ones_of_a_supported_or_weak_direction() -> None:
    v, e = tables("weak", {"eosin_mean": True, "sharpness": False, "hue_mean": True})
    assert named(v, e, "classifier") == ["eosin_mean", "hue_mean"]
    v, e = tables("not_supported", {"eosin_mean": True})
    assert named(v, e, "classifier") == []


@pytest.mark.parametrize(
    ("control", "verdict", "specific", "ok"),
    [
        ("stain", "supported", {"eosin_mean": True, "brightness": True}, True),
        ("stain", "weak", {"nuclear_area_mean": True, "eosin_mean": True}, False),  # names nuclei
        ("stain", "supported", {"sharpness": True}, False),  # names no stain
        ("stain", "not_supported", {"nuclear_area_mean": True}, True),  # abstains
        ("stain_he", "weak", {"nuclei_density": True, "hue_mean": True}, False),
        ("unrelated", "not_supported", {"eosin_mean": False}, True),
        ("unrelated", "not_supported", {"eosin_mean": True}, False),  # a specific feature
        ("unrelated", "weak", {"eosin_mean": False}, False),
        ("undrawable", "not_supported", {"sharpness": True}, True),
        ("undrawable", "weak", {"sharpness": False}, False),
        ("demo", "supported", {"hematoxylin_mean": True, "nuclei_density": True}, True),
        ("demo", "weak", {"hematoxylin_mean": True, "eosin_mean": True}, False),
        ("demo", "not_supported", {"eosin_mean": True}, True),
    ],
)
def test_rules(control: str, verdict: str, specific: dict[str, bool], ok: bool) -> None:
    v, e = tables(verdict, specific)
    assert (judge(control, v, e) == []) is ok, judge(control, v, e)


def test_abstaining_needs_reasons_and_a_verdict_is_needed() -> None:
    v, e = tables("not_supported", {"eosin_mean": False}, reasons="")
    assert judge("unrelated", v, e) == ["verdict not_supported without reasons"]
    assert judge("demo", v.assign(direction="meta:center=B"), e) == [
        "no verdict for the classifier direction"
    ]
    v, e = tables(
        "not_supported", {"eosin_mean": False}, extra=[("classifier|without:meta", "conditional")]
    )
    e = pd.concat([e, e.assign(direction="classifier|without:meta", specific=True)])
    assert "specific features of an unrelated output" in judge("unrelated", v, e)[0]
