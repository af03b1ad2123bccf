"""Generator-free probes: the classifier's sensitivity to controlled changes of real tiles
(stain, blur, compression, exposure, noise; window and contrast for radiology)."""

from pipeline.probes.perturb import (
    PERTURBATIONS,
    Probe,
    apply_probe,
    probe_list,
    probe_scores,
    stain_stats,
)
from pipeline.probes.stats import agreement, probe_effects

__all__ = [
    "PERTURBATIONS",
    "Probe",
    "agreement",
    "apply_probe",
    "probe_effects",
    "probe_list",
    "probe_scores",
    "stain_stats",
]
