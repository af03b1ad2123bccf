"""Generator-free probes: the classifier's sensitivity to controlled changes of real tiles
(stain, blur, compression, exposure, noise; window and contrast for radiology):
``perturb`` (the perturbations), ``stats`` (effects, agreement with the GAN's findings),
``families`` (default strengths and valid ranges)."""
