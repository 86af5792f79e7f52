"""Registering the trained adapter: the file is written and hashed outside the registry lock, and
a version another process took meanwhile moves this one to the next version (file included)."""

import pytest
from filelock import FileLock, Timeout
from safetensors import safe_open

from registry import Adapter, BlobStore, Registry, Run
from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # builds or runs the tiny pipeline


def test_the_adapter_is_saved_and_hashed_outside_the_lock_and_a_taken_version_moves_on(calli, styler_home, monkeypatch):
    from styler.train import methods

    held = []

    def lock_free() -> bool:
        other = FileLock(str(styler_home / ".locks" / "registry.lock"), timeout=0)
        try:
            other.acquire()
        except Timeout:
            return False
        other.release()
        return True

    real_save, real_put = methods.LoraMethod.save, BlobStore.put_file

    def save(self, path, metadata):
        held.append(("save", lock_free()))
        if len(held) == 1:  # another process registers calligraphy/mifu@1 while this one writes
            Registry().insert(Adapter(name="calligraphy/mifu", version=1, method="imported", blob="0" * 64))
        return real_save(self, path, metadata)

    def put_file(self, path, *a, **k):
        held.append(("hash", lock_free()))
        return real_put(self, path, *a, **k)

    monkeypatch.setattr(methods.LoraMethod, "save", save)
    monkeypatch.setattr(BlobStore, "put_file", put_file)
    r = run_cli("train", calli, "--base", "tiny", "--resolution", "32", "--steps", "1")
    assert r.exit_code == 0, r.stderr
    assert "trained calligraphy/mifu@2" in r.stdout
    assert held == [("save", True), ("hash", True), ("save", True), ("hash", True)]

    a = Registry().resolve(Adapter, "calligraphy/mifu@2")
    assert Registry().get(Run, a.run_id).adapter_id == a.id
    with safe_open(str(BlobStore(styler_home).path(a.blob)), "pt") as f:
        assert f.metadata()["styler.adapter"] == "calligraphy/mifu@2"
