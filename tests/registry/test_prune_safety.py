"""`prune` and `verify` key off records, refuse to act on a damaged registry, and clean up after
killed writers; `rebuild` restores dataset and adapter records from the files on disk."""

import json
import os
import time

from registry import Dataset, Registry
from registry.maintenance import execute_prune, plan_prune
from tests.helpers import make_images, run_cli


def _orphan(home, *parts):
    d = home.joinpath("datasets", *parts)
    d.mkdir(parents=True)
    (d / "x.png").write_bytes(b"12345")
    return d


def test_prune_keeps_a_registered_dataset_whose_name_is_all_digits(styler_home, tmp_path):
    make_images(tmp_path / "src", 2)
    for name in ("art/2024", "7/8", "2024"):
        r = run_cli("data", "add", name, tmp_path / "src")
        assert r.exit_code == 0, r.stderr
    orphans = [_orphan(styler_home, "art", "2024", "7"), _orphan(styler_home, "ns", "old", "1"),
               _orphan(styler_home, "2024", "5")]
    reg = Registry()
    kept = [styler_home / d.path for d in reg.all(Dataset)]

    plan = json.loads(run_cli("registry", "prune", "--dry-run", "--json").stdout)
    assert sorted(p for p, _ in plan["orphan_dirs"]) == sorted(map(str, orphans))
    r = run_cli("registry", "prune", "-y")
    assert r.exit_code == 0, r.stderr
    assert all((k / "manifest.json").is_file() for k in kept)
    assert not any(o.exists() for o in orphans)
    assert not (styler_home / "datasets" / "ns").exists()  # emptied parents go too
    assert run_cli("registry", "verify").stdout.strip() == "registry ok"


def test_prune_never_touches_folders_inside_a_registered_dataset(styler_home):
    reg = Registry()
    d = reg.insert(Dataset(name="one", version=1, path="datasets/one/1"))
    inner = styler_home / d.path / "2"  # e.g. a user's sub-folder that happens to be all digits
    inner.mkdir(parents=True)
    (styler_home / d.path / "manifest.json").write_text("{}")
    assert plan_prune(reg).orphan_dirs == []
    execute_prune(reg, plan_prune(reg))
    assert inner.is_dir()


# -- a damaged or missing table: verify flags it, prune refuses, rebuild restores ----------------

import struct

import pytest

from registry import Adapter, BlobStore, Output, RegistryCorrupt, Run
from registry.maintenance import verify


def _datasets(home, tmp_path, *names):
    make_images(tmp_path / "src", 2)
    for name in names:
        r = run_cli("data", "add", name, tmp_path / "src", "--prefix", "ink")
        assert r.exit_code == 0, r.stderr
    return Registry().all(Dataset)


def _safetensors(meta: dict, tensors: dict[str, list[int]]) -> bytes:
    """A safetensors file (zeros) with this metadata, written the way the format says."""
    header, offset = {"__metadata__": meta}, 0
    for key, shape in tensors.items():
        n = 4
        for d in shape:
            n *= d
        header[key] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\0" * offset


def _trained_adapter_blob(home, name, version, *, run_id, dataset):
    meta = {
        "styler.version": "0.1.0", "styler.adapter": f"{name}@{version}", "styler.method": "lora",
        "styler.run_id": run_id, "styler.base": json.dumps({"name": "tiny", "hash": "abc"}),
        "styler.dataset": json.dumps({"name": dataset.name, "version": dataset.version, "id": dataset.id}),
        "styler.trigger": "ink", "ss_network_dim": "4", "ss_network_alpha": "2.0", "format": "pt",
    }
    tensors = {"unet.down.attn1.to_q.lora_A.weight": [4, 8], "unet.down.attn1.to_q.lora_B.weight": [8, 4],
               "unet.down.attn1.to_out.0.lora_A.weight": [4, 8], "unet.down.attn1.to_out.0.lora_B.weight": [8, 4]}
    return BlobStore(home).put_bytes(_safetensors(meta, tensors))


def _fields(records, *skip):
    return sorted((r.to_dict() for r in records), key=lambda d: (d["name"], d["version"])) if not skip else sorted(
        ({k: v for k, v in r.to_dict().items() if k not in skip} for r in records), key=lambda d: (d["name"], d["version"]))


def test_an_empty_table_file_is_flagged_and_prune_refuses(styler_home, tmp_path):
    _datasets(styler_home, tmp_path, "ns/one", "two")
    reg = Registry()
    reg.table_path("datasets").write_bytes(b"")  # `: > registry/datasets.json`
    problems = verify(reg)
    assert [(p.kind, p.where) for p in problems] == [("corrupt-table", str(reg.table_path("datasets")))]
    assert "rebuild" in problems[0].detail
    with pytest.raises(RegistryCorrupt, match=r"datasets.*styler registry rebuild"):
        plan_prune(reg)
    with pytest.raises(RegistryCorrupt):
        reg.all(Dataset)  # an empty file is damage (styler never writes one), not an empty table


def test_prune_refuses_while_a_table_is_missing(styler_home, tmp_path):
    _datasets(styler_home, tmp_path, "ns/one")
    reg = Registry()
    reg.table_path("datasets").rename(reg.dir / "datasets.json.bad")  # what the old message said to do
    (p,) = verify(reg)
    assert p.kind == "missing-table" and "styler registry rebuild" in p.detail
    with pytest.raises(RegistryCorrupt, match=r"datasets.*missing.*styler registry rebuild"):
        plan_prune(reg)


def test_rebuild_restores_datasets_and_adapters_from_disk(styler_home, tmp_path):
    from registry.rebuild import execute_rebuild, plan_rebuild

    before = _datasets(styler_home, tmp_path, "ns/one", "art/2024", "two")
    reg = Registry()
    one = next(d for d in before if d.name == "ns/one")
    run = reg.insert(Run(dataset_id=one.id, status="completed"))
    digest = _trained_adapter_blob(styler_home, "ns/one", 1, run_id=run.id, dataset=one)
    adapter = reg.insert(Adapter(name="ns/one", version=1, method="lora", blob=digest, base={"name": "tiny", "hash": "abc"},
                                 run_id=run.id, dataset_id=one.id, rank=4, alpha=2.0, targets=["to_out.0", "to_q"],
                                 trigger="ink"))
    reg.update(Run, run.id, adapter_id=adapter.id)
    reg.insert(Output(blob=BlobStore(styler_home).put_bytes(b"png"), adapters=[{"id": adapter.id, "name": "ns/one", "version": 1}]))
    reg.table_path("datasets").write_bytes(b"")
    reg.table_path("adapters").write_bytes(b"{ broken")
    healthy = {t: reg.table_path(t).read_bytes() for t in ("runs", "outputs", "jobs")}

    plan = plan_rebuild(reg)
    assert sorted(d.label for d in plan.records["datasets"]) == ["art/2024@1", "ns/one@1", "two@1"]
    assert [a.label for a in plan.records["adapters"]] == ["ns/one@1"]
    assert reg.table_path("datasets").read_bytes() == b""  # planning changes nothing
    execute_rebuild(reg, plan)

    skip = ("created_at",)
    got = Registry().all(Dataset)
    assert _fields(got, *skip, "id") == _fields(before, *skip, "id")
    assert next(d for d in got if d.name == "ns/one").id == one.id  # its id is known from the adapter's provenance
    (a,) = Registry().all(Adapter)
    assert {k: v for k, v in a.to_dict().items() if k not in ("created_at", "metadata")} == \
        {k: v for k, v in adapter.to_dict().items() if k not in ("created_at", "metadata")}
    assert (reg.dir / "datasets.json.bad").read_bytes() == b"" and (reg.dir / "adapters.json.bad").is_file()
    assert {t: reg.table_path(t).read_bytes() for t in healthy} == healthy  # healthy tables untouched
    assert verify(reg) == []
    assert plan_prune(reg).orphan_dirs == [] and plan_prune(reg).blobs == []
    assert plan_rebuild(reg).empty


def test_rebuild_keeps_healthy_records_of_a_partly_damaged_table(styler_home, tmp_path, monkeypatch):
    from registry import store as store_mod
    from registry.rebuild import execute_rebuild, plan_rebuild

    monkeypatch.setattr(store_mod, "SEGMENT_BYTES", 1)  # every dataset record in a segment of its own
    before = _datasets(styler_home, tmp_path, "a", "b", "c")
    reg = Registry()
    segs = reg.segments("datasets")
    (b_seg,) = [p for p in segs if '"name":"b"' in p.read_text()]
    assert b_seg != reg.table_path("datasets")  # a sealed segment
    b_seg.write_bytes(b"\xff")  # b's segment is damaged
    kept = {p: p.read_bytes() for p in segs if p != b_seg}
    plan = plan_rebuild(reg)
    assert [d.label for d in plan.records["datasets"]] == ["b@1"]
    execute_rebuild(reg, plan)
    assert {p: p.read_bytes() for p in kept} == kept
    assert _fields(Registry().all(Dataset), "created_at", "id") == _fields(before, "created_at", "id")
    assert verify(reg) == []


def test_reapplied_migrations_do_not_paper_over_a_lost_table(styler_home, tmp_path):
    _datasets(styler_home, tmp_path, "ns/one")
    reg = Registry()
    reg.table_path("datasets").unlink()
    (reg.dir / "_migrations.json").rename(reg.dir / "_migrations.json.bad")  # as its message says to
    (p,) = verify(Registry())
    assert (p.kind, p.where) == ("missing-table", str(reg.table_path("datasets")))
    with pytest.raises(RegistryCorrupt, match="missing"):
        plan_prune(Registry())


# -- killed writers: a sealed table without its active file, temp files ------------------------

class _Killed(BaseException):
    """Stands in for SIGKILL at one point of a write (nothing after it runs)."""


def test_a_kill_between_sealing_and_writing_leaves_a_valid_table(styler_home, monkeypatch):
    from registry import store as store_mod

    reg = Registry()
    one = len(json.dumps(Output(prompt="p00").to_dict()))
    monkeypatch.setattr(store_mod, "SEGMENT_BYTES", one * 3)
    made = [reg.insert(Output(prompt=f"p{i}")) for i in range(4)]
    real_seal = Registry._seal

    def seal_then_die(self, table):
        real_seal(self, table)
        raise _Killed()

    monkeypatch.setattr(Registry, "_seal", seal_then_die)
    with pytest.raises(_Killed):
        reg.insert(Output(prompt="lost"))
    monkeypatch.setattr(Registry, "_seal", real_seal)
    assert not reg.table_path("outputs").exists() and reg.segments("outputs")
    assert verify(reg) == []  # a sealed table waiting for its next write is healthy
    assert [o.id for o in reg.all(Output)] == [o.id for o in made]
    sealed = {p: p.read_bytes() for p in reg.segments("outputs")}
    more = [reg.insert(Output(prompt=f"q{i}")) for i in range(4)]  # the next writes go on, no segment overwritten
    assert all(p.read_bytes() == b for p, b in sealed.items())
    assert [o.id for o in reg.all(Output)] == [o.id for o in made + more]
    assert verify(reg) == [] and plan_prune(reg).empty


def test_a_table_without_any_file_is_missing(styler_home):
    reg = Registry()
    reg.insert(Run())
    reg.table_path("runs").unlink()
    (p,) = verify(reg)
    assert (p.kind, p.where) == ("missing-table", str(reg.table_path("runs")))
    assert "restore it from a backup" in p.detail


def _leftover(reg, name, age_s, size=1000):
    p = reg.dir / name
    p.write_bytes(b"x" * size)
    t = time.time() - age_s
    os.utime(p, (t, t))
    return p


def test_prune_removes_stale_registry_temp_files_and_verify_mentions_them(styler_home):
    from registry.maintenance import leftover_temp_files

    reg = Registry()
    reg.count(Output)
    old = [_leftover(reg, f".outputs.json.k{i}x9z_.tmp", 3600) for i in range(3)]
    fresh = _leftover(reg, ".jobs.json.a1b2c3.tmp", 5)
    assert verify(reg) == []  # leftovers are not damage ...
    assert sorted(p for p, _ in leftover_temp_files(reg)) == sorted(map(str, old + [fresh]))  # ... but are listed
    plan = plan_prune(reg)
    assert sorted(p for p, _ in plan.temp_files) == sorted(map(str, old))  # a fresh one may be a live write's
    assert plan.bytes == 3000
    assert execute_prune(reg, plan) == 3000
    assert not any(p.exists() for p in old) and fresh.exists()
    assert reg.count(Output) == 0
