"""Numpy-only pre/post-processing of each model, importable without torch."""
