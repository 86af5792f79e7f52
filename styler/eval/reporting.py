"""`styler report NAME… --out FILE.png|.html`: samples and scores of each subject in one file."""

from __future__ import annotations

from pathlib import Path

from registry import Output, Registry

from ..errors import UsageError
from .features import clip_note
from .run import output_images
from .table import baseline_name, comparable_group, latest_scores

SAMPLES = 8


def write_report(names: list[str], out: str | Path, *, registry: Registry | None = None) -> Path:
    from .report import SubjectReport, render_html, render_png

    reg = registry or Registry()
    path = Path(out).expanduser()
    if path.suffix.lower() not in (".png", ".html"):
        raise UsageError(f"--out {path}: use a .png or .html file name")
    from .run import SubjectQuery

    rows = latest_scores(reg, names)
    scored = [s.subject for r in rows.values() for s in r.values()]
    missing = [n for n in names if not any(map(SubjectQuery([n], reg), scored))]
    if missing:
        raise UsageError(f"no scores for {', '.join(missing)}; run `styler eval {missing[0]}` first")
    subjects = []
    for name, scores in sorted(rows.items(), key=lambda kv: (kv[0].startswith("baseline"), kv[0])):
        newest = max(scores.values(), key=lambda s: s.id)
        outs = [reg.get(Output, i) for i in newest.output_ids[:SAMPLES]]
        meaningful = all(s.protocol.get("clip", {}).get("meaningful", True) for s in scores.values())
        values = {m: s.value for m, s in scores.items() if not m.startswith("probe:")}
        own = rows.get(baseline_name(newest), {}) if newest.subject.get("kind") != "baseline" else {}
        subjects.append(SubjectReport(name=name, images=output_images(outs, reg), scores=values,
                                      meaningful=meaningful,
                                      clip_note=clip_note(s.protocol for s in scores.values()) if meaningful else "",
                                      baseline=newest.subject.get("kind") == "baseline",
                                      group=comparable_group(newest),
                                      delta={m: v - own[m].value for m, v in values.items() if m in own}))
    (render_png if path.suffix.lower() == ".png" else render_html)(subjects, path, title="styler report")
    return path
