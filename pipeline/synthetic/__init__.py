"""The synthetic H&E demo cohort: planted factors with a known answer (docs/demo_cohort.md)."""

from pipeline.synthetic.counterfactual import (
    counterfactual_logits,
    counterfactual_renders,
    stain_counterfactual_logits,
    tissue_tiles,
)
from pipeline.synthetic.he import (
    CENTER_STAINS,
    OD_BACKGROUND,
    RUIFROK_E,
    RUIFROK_H,
    STAINS,
    Stain,
    center_stain,
    planted_counts,
    planted_nuclei,
    render_slide,
    stain_concentrations,
)
from pipeline.synthetic.plan import (
    CENTERS,
    NUCLEAR_RADIUS_UM,
    NUCLEI_PER_MM2,
    SLIDE_JITTER,
    plan_cohort,
)

__all__ = [
    "CENTERS",
    "CENTER_STAINS",
    "NUCLEAR_RADIUS_UM",
    "NUCLEI_PER_MM2",
    "OD_BACKGROUND",
    "RUIFROK_E",
    "RUIFROK_H",
    "SLIDE_JITTER",
    "STAINS",
    "Stain",
    "center_stain",
    "counterfactual_logits",
    "counterfactual_renders",
    "plan_cohort",
    "planted_counts",
    "planted_nuclei",
    "render_slide",
    "stain_concentrations",
    "stain_counterfactual_logits",
    "tissue_tiles",
]
