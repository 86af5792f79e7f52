"""Evaluation: CLIP features, metrics, the style probe, reports."""
