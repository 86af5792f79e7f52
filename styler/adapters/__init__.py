"""Adapters: file formats (peft/diffusers <-> kohya), exact mixing, merging."""
