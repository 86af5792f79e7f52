"""Training: one loop with methods plugged in (lora, dreambooth, textual-inversion)."""
