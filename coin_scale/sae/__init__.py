"""Sparse autoencoders over a layer's activations (issue 6: not built yet)."""
