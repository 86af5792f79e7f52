"""A read-only home: reads work without a lock file (atomic replace keeps every file whole);
a write fails with one line naming the folder."""

import errno

import pytest

from registry import Dataset, Output, Registry, RegistryError, Run
from registry.maintenance import verify
from tests.helpers import make_images, run_cli
from tests.registry.readonly import make_read_only


def _filled(home, tmp_path):
    make_images(tmp_path / "src", 2)
    assert run_cli("data", "add", "ns/one", tmp_path / "src").exit_code == 0
    Registry().insert(Run(status="completed"))


def test_the_simulation_is_read_only(styler_home, tmp_path, monkeypatch):
    _filled(styler_home, tmp_path)
    make_read_only(monkeypatch, styler_home)
    with pytest.raises(OSError) as exc:
        (styler_home / "x").write_bytes(b"")
    assert exc.value.errno == errno.EROFS
    import tempfile

    with pytest.raises(OSError) as exc:
        tempfile.mkstemp(dir=styler_home)
    assert exc.value.errno == errno.EROFS
    assert (styler_home / "registry" / "datasets.json").read_bytes()  # reading still works


def test_reads_work_on_a_read_only_home(styler_home, tmp_path, monkeypatch):
    _filled(styler_home, tmp_path)
    lock = styler_home / ".locks" / "registry.lock"
    make_read_only(monkeypatch, styler_home)
    reg = Registry()
    assert [d.label for d in reg.all(Dataset)] == ["ns/one@1"]
    assert reg.count(Run) == 1 and reg.resolve(Dataset, "ns/one").version == 1
    assert verify(reg) == []
    with pytest.raises(RegistryError) as exc:
        reg.insert(Output(prompt="x"))
    assert "read-only" in exc.value.message and str(styler_home) in exc.value.message
    assert "\n" not in exc.value.message


def test_cli_reads_work_and_writes_fail_in_one_line_on_a_read_only_home(styler_home, tmp_path, monkeypatch):
    from registry import BlobStore

    _filled(styler_home, tmp_path)
    BlobStore(styler_home).put_bytes(b"unused")  # something for prune to do
    make_read_only(monkeypatch, styler_home)
    r = run_cli("data", "ls")
    assert r.exit_code == 0 and "ns/one" in r.stdout, r.stderr
    r = run_cli("registry", "verify")
    assert r.exit_code == 0 and r.stdout.strip() == "registry ok", r.stderr
    assert run_cli("registry", "ls", "--json").exit_code == 0
    r = run_cli("data", "add", "ns/two", tmp_path / "src")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "unexpected" not in r.stderr, r.stderr
    assert "read-only" in r.stderr or "could not write" in r.stderr
    r = run_cli("registry", "prune", "-y")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "unexpected" not in r.stderr, r.stderr
    assert "read-only" in r.stderr and str(styler_home) in r.stderr


def test_a_home_that_never_existed_reads_as_empty_when_it_cannot_be_made(styler_home, monkeypatch):
    make_read_only(monkeypatch, styler_home.parent)
    assert Registry().all(Dataset) == []
    r = run_cli("data", "ls")
    assert r.exit_code == 0, r.stderr
