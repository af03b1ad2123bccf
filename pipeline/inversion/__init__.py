"""GAN inversion: an encoder image → w, batched latent refinement, fidelity (pure torch)."""
