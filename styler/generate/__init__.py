"""Image generation helpers: PNG generation metadata (A1111-compatible) and labelled contact sheets."""
