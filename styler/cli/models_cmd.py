"""`styler models`: list and inspect base models (reads files only; never loads torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import err, escape, human_bytes, out, print_json

app = typer.Typer(
    no_args_is_help=True,
    help="Base models: the built-in tiny, the HF cache, folders, single files.",
    context_settings={"help_option_names": ["-h", "--help"]},
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

# original (LDM) single-file key prefixes -> diffusers component names
_SINGLE_FILE_PREFIXES = {"model.diffusion_model.": "unet", "first_stage_model.": "vae",
                         "cond_stage_model.": "text_encoder", "conditioner.": "text_encoder"}


def _count(n: int) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


@app.command("ls")
def ls(as_json: JsonOpt = False) -> None:
    """List the tiny base, the configured base and SD pipelines in the local HF cache."""
    from ..models.resolve import list_models

    rows = list_models()
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("name", "kind", "path", "status"):
        table.add_column(col, overflow="fold")
    for row in rows:
        status = row["status"] if row["status"] != "error" else f"[red]error[/]: {escape(row['detail'])}"
        table.add_row(escape(row["name"]), row["kind"], escape(row["path"]), status)
    out.print(table)


def _folder_components(folder: Path) -> list[dict]:
    from ..models.resolve import WEIGHT_COMPONENTS, _read_json, tensor_stats, weight_files

    comps = []
    for name, spec in sorted(_read_json(folder / "model_index.json").items()):
        if name.startswith("_") or not isinstance(spec, list) or len(spec) != 2 or spec[1] is None:
            continue
        row = {"name": name, "class": spec[1], "params": None, "bytes": None, "dtypes": []}
        files = weight_files(folder / name)
        if files:
            stats = [tensor_stats(f) for f in files]
            row["params"] = sum(s["params"] for s in stats)
            row["bytes"] = sum(s["bytes"] for s in stats)
            row["dtypes"] = sorted({d for s in stats for d in s["dtypes"]})
        elif name in WEIGHT_COMPONENTS:
            row["class"] += " (no .safetensors weights)"
        if name == "tokenizer" and (folder / name / "vocab.json").is_file():
            row["vocab"] = len(_read_json(folder / name / "vocab.json"))
        comps.append(row)
    return comps


def _single_file_components(path: Path) -> list[dict]:
    from ..models.resolve import safetensors_header

    groups: dict[str, dict] = {}
    for key, value in safetensors_header(path).items():
        if key == "__metadata__":
            continue
        comp = next((c for p, c in _SINGLE_FILE_PREFIXES.items() if key.startswith(p)), "other")
        g = groups.setdefault(comp, {"name": comp, "class": "", "params": 0, "bytes": None, "dtypes": set()})
        n = 1
        for dim in value["shape"]:
            n *= int(dim)
        g["params"] += n
        g["dtypes"].add(value["dtype"])
    return [dict(g, dtypes=sorted(g["dtypes"])) for _, g in sorted(groups.items())]


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="tiny, a Hugging Face repo id, a diffusers folder or a .safetensors file.")],
    as_json: JsonOpt = False,
) -> None:
    """Show a base model: kind, path, components with parameter counts, identity hash."""
    from ..config import home
    from ..models.resolve import base_identity, family, resolve_base
    from ..models.tiny import is_built, tiny_dir

    if name.strip().lower() == "tiny" and not is_built(tiny_dir(home())):
        err.print("[dim]building the tiny base (first use, a few seconds)…[/]")
    base = resolve_base(name)
    if base.kind == "single_file":
        comps = _single_file_components(base.path)
        fam = ""
    else:
        comps = _folder_components(base.path)
        fam = family(base.path)
    ident = base_identity(base)
    info = {"name": base.name, "kind": base.kind, "path": str(base.path), "family": fam,
            "detail": base.detail, "hash": ident["hash"], "components": comps,
            "params": sum(c["params"] or 0 for c in comps)}
    if as_json:
        print_json(info)
        return
    from rich.table import Table

    extra = f", {fam}" if fam and fam != base.kind else ""
    out.print(f"[bold]{escape(base.name)}[/]  ({base.kind}{extra})")
    out.print(f"path: {escape(str(base.path))}")
    out.print(f"hash: {ident['hash']}")
    if base.detail:
        out.print(f"note: {escape(base.detail)}")
    table = Table(box=None, pad_edge=False)
    for col in ("component", "class", "params", "size", "dtype"):
        table.add_column(col, justify="right" if col in ("params", "size") else "left")
    for c in comps:
        extra = f" (vocab {c['vocab']})" if c.get("vocab") else ""
        table.add_row(c["name"], escape(c["class"] + extra), _count(c["params"]) if c["params"] else "",
                      human_bytes(c["bytes"]) if c["bytes"] else "", ",".join(c["dtypes"]))
    out.print(table)
    out.print(f"total parameters: {_count(info['params'])}")
