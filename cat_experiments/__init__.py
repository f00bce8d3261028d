"""cat-experiments: Compute Aligned Training (CAT) as a Hydra-configured experiment framework."""

__version__ = "0.1.0"
