"""The synthetic H&E demo cohort: planted factors with a known answer."""

from pipeline.synthetic.he import STAINS, render_slide
from pipeline.synthetic.plan import CENTERS, NUCLEAR_RADIUS_UM, NUCLEI_PER_MM2, plan_cohort

__all__ = [
    "CENTERS",
    "NUCLEAR_RADIUS_UM",
    "NUCLEI_PER_MM2",
    "STAINS",
    "plan_cohort",
    "render_slide",
]
