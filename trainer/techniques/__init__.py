"""Technique registry: the torch-free catalogue and the torch implementations."""
