"""The comparison table behind `styler scores`: the newest score per subject and metric."""

from __future__ import annotations

import math

from registry import Registry, Score

LOWER_IS_BETTER = {"fid", "kid", "cmmd"}
ORDER = ("clip_t", "style_sim", "cmmd", "fid", "kid", "content_sim", "ssim", "style_strength")


def latest_scores(reg: Registry, names: list[str] | None = None, metric: str | None = None) -> dict:
    """{subject name: {metric: Score}} keeping the newest score of each pair."""
    rows: dict[str, dict[str, Score]] = {}
    for s in reg.all(Score):  # oldest first, so newer ones overwrite
        name = s.subject.get("name", "?")
        if metric and s.metric != metric:
            continue
        rows.setdefault(name, {})[s.metric] = s
    if names:
        from .run import SubjectQuery

        query = SubjectQuery(names, reg)
        picked = {k for k, v in rows.items() if any(query(s.subject) for s in v.values())}
        refs = {s.protocol.get("against", {}).get("name") for k in picked for s in rows[k].values()}
        rows = {k: v for k, v in rows.items() if k in picked or k == "baseline"
                or (k.startswith("baseline vs ") and k[len("baseline vs "):] in refs)}
    return rows


def baseline_name(score: Score) -> str:
    """The row of the plain base scored with the same prompts, seeds and reference as `score`."""
    against = (score.protocol.get("against") or {}).get("name")
    return f"baseline vs {against}" if against else "baseline"


def comparable_group(score: Score) -> str:
    """Scores in one group were computed the same way (same CLIP, same reference set): only they
    may be ranked against each other."""
    clip = (score.protocol.get("clip") or {}).get("hash") or (score.protocol.get("clip") or {}).get("name", "")
    against = (score.protocol.get("against") or {}).get("id") or (score.protocol.get("against") or {}).get("name", "")
    return f"{clip}|{against}"


def comparable_winners(entries) -> dict[str, set[str]]:
    """{metric: names} with the best value among comparable entries — (name, group, is_baseline,
    {metric: value}) — : never a baseline (it is the reference), and only within a group (same
    CLIP, same reference set) of at least two."""
    groups: dict[str, dict[str, dict]] = {}
    for name, group, is_baseline, scores in entries:
        if not is_baseline:
            groups.setdefault(group, {})[name] = scores
    out: dict[str, set[str]] = {}
    for members in groups.values():
        if len(members) >= 2:
            for metric, name in best_per_metric(members).items():
                out.setdefault(metric, set()).add(name)
    return out


def row_winners(rows: dict) -> dict[str, set[str]]:
    """comparable_winners over latest_scores' rows."""
    entries = []
    for name, scores in rows.items():
        newest = max(scores.values(), key=lambda sc: sc.id)
        entries.append((name, comparable_group(newest), newest.subject.get("kind") == "baseline",
                        {m: sc.value for m, sc in scores.items()}))
    return comparable_winners(entries)


def row_n(scores: dict) -> str:
    """Images per side behind a row's scores: '8', or '2/8' when its metrics come from evals of
    different sizes."""
    ns = sorted({int(sc.protocol["n"]) for sc in scores.values() if isinstance(sc.protocol.get("n"), int)})
    return "/".join(map(str, ns)) or "-"


def columns(rows: dict) -> list[str]:
    found = {m for r in rows.values() for m in r}
    return [m for m in ORDER if m in found] + sorted(found - set(ORDER))


def best(rows: dict, metric: str) -> str | None:
    """The subject with the best `metric` among {subject: {metric: Score}}."""
    return best_per_metric({n: {m: s.value for m, s in r.items()} for n, r in rows.items()}).get(metric)


def lower_is_better(metric: str) -> bool:
    return metric.lower() in LOWER_IS_BETTER


def _valid(value) -> bool:
    try:
        return value is not None and not isinstance(value, bool) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def best_per_metric(rows: dict[str, dict[str, float]]) -> dict[str, str]:
    """``{metric: subject}`` with the best value per metric (lowest for LOWER_IS_BETTER, else the
    highest); None/NaN/inf are ignored, ties go to the first subject, all-invalid metrics are left out."""
    best: dict[str, tuple[float, str]] = {}
    for subject, scores in rows.items():
        for metric, value in scores.items():
            if not _valid(value):
                continue
            key = -float(value) if lower_is_better(metric) else float(value)
            if metric not in best or key > best[metric][0]:
                best[metric] = (key, subject)
    return {metric: subject for metric, (_, subject) in best.items()}


def ordered_subjects(rows: dict) -> list[str]:
    return sorted(rows, key=lambda n: (n.startswith("baseline"), n))
