"""The classifier to explain: the model contract, the built-in tile CNN, its training math and
the baseline heatmaps (GradCAM, occlusion)."""
