"""styler: train, organise, mix and evaluate Stable Diffusion style adapters."""

__version__ = "0.1.0"
