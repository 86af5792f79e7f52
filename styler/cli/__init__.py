"""The `styler` command: one Typer app per command group, each thin (parse → library → render)."""
