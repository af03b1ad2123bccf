"""The controls of the trust gates: planted cohort/classifier pairs whose right answer, or the
obligation to abstain, is known — and the rule each must obey, fixed before any tuning.

- ``stain``: a ``cells`` cohort (eosin planted per slide, nuclei independent) and a
  TorchScript black box reading mean eosin OD: name a stain feature and no nuclear one, or
  abstain with reasons.
- ``unrelated``: the same cohort and a black box hashing the pixels: ``not_supported`` with
  reasons, and no feature specific along its directions.
- ``undrawable``: the demo renderer with green pen ink on half the slides and a black box
  reading the ink (the generator never saw ink): ``not_supported`` with reasons, nothing named.
- ``demo``: the demo cohort (planted nuclear density and size) and the built-in CNN: name
  nuclear density or size, or abstain with reasons.
- ``stain_he``: the demo cohort, whose stain the demo generator draws, and the eosin black
  box: as ``stain``. (Added after ``stain`` abstained on its ``cells`` cohort because the
  generator's samples never reach that cohort's eosin: this one reaches the specificity test.)

"Named" features are what the report headlines: the ``specific`` features of a direction whose
verdict is ``supported`` or ``weak``; a ``not_supported`` direction names none.
"""

from __future__ import annotations

import pandas as pd

NUCLEAR = frozenset(
    {
        "nuclei_density",
        "nuclear_area_mean",
        "nuclear_area_fraction",
        "nuclear_hematoxylin_mean",
        "nuclear_eccentricity_mean",
    }
)
STAIN = frozenset({"eosin_mean", "hematoxylin_mean", "hue_mean", "saturation_mean"})
PLANTED_NUCLEI = frozenset({"nuclei_density", "nuclear_area_mean"})
VERDICTS = ("supported", "weak", "not_supported")
CONTROLS = ("stain", "unrelated", "undrawable", "demo", "stain_he")
CLASSIFIER_KINDS = ("classifier", "conditional")


def named(verdicts: pd.DataFrame, effects: pd.DataFrame, direction: str) -> list[str]:
    """The features the report names for ``direction``, most specific first."""
    v = verdicts.set_index("direction")
    if direction not in v.index or v.loc[direction, "verdict"] == "not_supported":
        return []
    e = effects[(effects["direction"] == direction) & effects["specific"].astype(bool)]
    return e.sort_values("rank")["feature"].tolist()


def judge(control: str, verdicts: pd.DataFrame, effects: pd.DataFrame) -> list[str]:
    """What ``control``'s run got wrong (empty: it passed), judged on the explained class's
    ``classifier`` direction (and, for ``unrelated``, its conditional versions too)."""
    if control not in CONTROLS:
        raise ValueError(f"unknown control {control!r}; one of {CONTROLS}")
    v = verdicts.set_index("direction")
    if "classifier" not in v.index:
        return ["no verdict for the classifier direction"]
    row = v.loc["classifier"]
    wrong = [f"verdict {row['verdict']!r} is not one of {VERDICTS}"] * (
        row["verdict"] not in VERDICTS
    )
    if row["verdict"] != "supported" and not str(row["reasons"]).strip():
        wrong.append(f"verdict {row['verdict']} without reasons")
    names = set(named(verdicts, effects, "classifier"))
    if control in ("stain", "stain_he") and names and (not names & STAIN or names & NUCLEAR):
        wrong.append(f"a stain-reading model explained by {sorted(names)}")
    if control == "unrelated":
        if row["verdict"] != "not_supported":
            wrong.append(f"an output unrelated to the tile judged {row['verdict']}")
        ours = verdicts.loc[verdicts["kind"].isin(CLASSIFIER_KINDS), "direction"]
        spec = effects[effects["direction"].isin(ours) & effects["specific"].astype(bool)]
        if len(spec):
            wrong.append(
                f"specific features of an unrelated output: "
                f"{sorted(set(spec['direction'] + ':' + spec['feature']))}"
            )
    if control == "undrawable" and (row["verdict"] != "not_supported" or names):
        wrong.append(f"an undrawable property judged {row['verdict']}, named {sorted(names)}")
    if control == "demo" and names and not names & PLANTED_NUCLEI:
        wrong.append(f"planted nuclear density/size explained by {sorted(names)}")
    return wrong


# The probes' controls (generator-free, ``perturbations.parquet``), fixed before tuning:
# a black box that reads eosin is sensitive to eosin scaling and not to blur; one that reads
# sharpness the reverse; the demo's classifier of planted nuclei moves far less with any
# stain change than with the planted nuclei (the renderer's counterfactuals).
STAIN_FAMILIES = ("hematoxylin", "eosin", "stain_normalise")
SENSITIVITY_RATIO = 3.0


def sensitivity(probes: pd.DataFrame, families: tuple[str, ...]) -> float:
    """Largest |effect| over the ``all`` rows of ``families`` (0 when none ran)."""
    p = probes[probes["family"].isin(families) & (probes["group"] == "all")]
    return float(p["effect"].abs().max()) if len(p) else 0.0


def _significant(probes: pd.DataFrame, family: str, strength_above: float, sign: int) -> bool:
    p = probes[
        (probes["family"] == family)
        & (probes["group"] == "all")
        & (probes["strength"] > strength_above)
    ]
    return bool(((p["ci_low"] > 0) if sign > 0 else (p["ci_high"] < 0)).any())


def judge_probes(reader: str, probes: pd.DataFrame, planted: float | None = None) -> list[str]:
    """What the probes got wrong for a classifier that reads ``reader`` (``eosin``,
    ``sharpness``, or ``nuclei`` with ``planted``: the smallest logit change the planted
    density or size alone makes in the renderer's counterfactuals); empty: passed."""
    wrong = []
    stain, blur = sensitivity(probes, STAIN_FAMILIES), sensitivity(probes, ("blur",))
    if reader == "eosin":
        if not _significant(probes, "eosin", 1.0, +1):
            wrong.append("more eosin does not raise an eosin reader's logit")
        if sensitivity(probes, ("eosin",)) < SENSITIVITY_RATIO * blur:
            wrong.append(f"an eosin reader moves with blur ({blur:.3g}) about as with eosin")
    elif reader == "sharpness":
        if not _significant(probes, "blur", 0.0, -1):
            wrong.append("blur does not lower a sharpness reader's logit")
        if blur < SENSITIVITY_RATIO * stain:
            wrong.append(f"a sharpness reader moves with stain ({stain:.3g}) about as with blur")
    elif reader == "nuclei":
        if planted is None or not stain < 0.5 * planted:
            wrong.append(f"stain moves the nuclei reader's logit by {stain:.3g}, planted {planted}")
    else:
        raise ValueError(f"unknown reader {reader!r}")
    return wrong
