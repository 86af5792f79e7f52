import json

import pytest

from registry import Conflict, Dataset, NotFound, Output, Registry, RegistryCorrupt, Run
from registry import migrations as mig
from registry import store as store_mod


def test_insert_get_update_remove_roundtrip(styler_home):
    reg = Registry()
    run = reg.insert(Run(method="lora", config={"rank": 4}))
    assert reg.get(Run, run.id) == run
    updated = reg.update(Run, run.id, status="running", step=3)
    assert (updated.status, updated.step, updated.config) == ("running", 3, {"rank": 4})
    assert reg.get(Run, run.id).status == "running"
    reg.remove(Run, run.id)
    with pytest.raises(NotFound):
        reg.get(Run, run.id)


def test_records_are_frozen_and_ids_are_time_ordered():
    a, b = Output(prompt="a"), Output(prompt="b")
    assert a.id < b.id and len(a.id) == 26
    with pytest.raises(Exception):
        a.prompt = "x"


def test_versions_and_resolve(styler_home):
    reg = Registry()
    for v in (1, 2, 3):
        reg.insert(Dataset(name="art/era", version=v))
    assert reg.resolve(Dataset, "art/era").version == 3
    assert reg.resolve(Dataset, "art/era@latest").version == 3
    assert reg.resolve(Dataset, "art/era@2").version == 2
    assert reg.next_version(Dataset, "art/era") == 4
    with pytest.raises(NotFound, match="has no version @7; it has @1, @2, @3"):
        reg.resolve(Dataset, "art/era@7")
    with pytest.raises(NotFound, match="no dataset named 'art/nope'"):
        reg.resolve(Dataset, "art/nope")
    with pytest.raises(Conflict):
        reg.insert(Dataset(name="art/era", version=2))


def test_update_refuses_unknown_fields(styler_home):
    reg = Registry()
    run = reg.insert(Run())
    with pytest.raises(ValueError):
        reg.update(Run, run.id, nonsense=1)
    with pytest.raises(ValueError):
        reg.update(Run, run.id, id="x")


def test_tables_are_sealed_into_segments_and_still_read_whole(styler_home, monkeypatch):
    reg = Registry()
    one = len(json.dumps(Output(prompt="p00").to_dict()))
    monkeypatch.setattr(store_mod, "SEGMENT_BYTES", one * 10)  # about ten records a segment
    made = [reg.insert(Output(prompt=f"p{i:02d}")) for i in range(25)]
    segs = reg.segments("outputs")
    assert [p.name for p in segs] == ["outputs.0001.json", "outputs.0002.json", "outputs.json"]
    assert reg.count(Output) == 25
    assert [o.id for o in reg.all(Output)] == [o.id for o in made]
    # records in sealed segments can be found, updated and removed
    assert reg.get(Output, made[3].id).prompt == "p03"
    assert reg.update(Output, made[3].id, prompt="changed").prompt == "changed"
    reg.remove(Output, made[4].id)
    assert reg.count(Output) == 24


def test_migrations_are_recorded_once_and_idempotent(styler_home, monkeypatch):
    calls = []
    monkeypatch.setattr(mig, "MIGRATIONS", mig.MIGRATIONS + [("9999_test", lambda reg: calls.append(1))])
    monkeypatch.setattr(store_mod, "MIGRATIONS", mig.MIGRATIONS)
    Registry().count(Run)
    Registry().count(Run)
    assert calls == [1]
    names = Registry().applied_migrations()
    assert names == ["0001_create_layout", "0002_create_table_files", "9999_test"]
    assert (styler_home / "blobs" / "sha256").is_dir()


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b"[1, 2]"])
def test_corrupt_table_file_gives_a_clear_error_naming_it(styler_home, content):
    reg = Registry()
    reg.insert(Run())
    reg.table_path("runs").write_bytes(content)
    with pytest.raises(RegistryCorrupt) as exc:
        reg.all(Run)
    assert str(reg.table_path("runs")) in exc.value.message
    assert "restore" in exc.value.message


def test_atomic_writes_leave_no_temp_files(styler_home):
    reg = Registry()
    for _ in range(5):
        reg.insert(Run())
    leftovers = [p.name for p in reg.dir.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    json.loads(reg.table_path("runs").read_text())  # valid JSON on disk


def test_unknown_keys_in_stored_records_are_ignored(styler_home):
    reg = Registry()
    r = reg.insert(Run(method="lora"))
    data = json.loads(reg.table_path("runs").read_text())
    next(iter(data["runs"].values()))["from_the_future"] = 1
    reg.table_path("runs").write_text(json.dumps(data))
    assert reg.get(Run, r.id).method == "lora"
