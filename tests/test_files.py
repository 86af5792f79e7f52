"""styler/files.py: atomic writes create files as a plain open() does (0o666 & ~umask)."""

import os

import pytest

from styler.errors import WriteError
from styler.files import atomic_write, write_bytes_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_files_get_the_umask_permissions_not_0600(tmp_path, umask_022):
    # a writer that opens the temp path itself (safetensors' save_file does), and the bytes helper
    a = atomic_write(tmp_path / "a.safetensors", lambda tmp: open(tmp, "wb").write(b"x"))
    b = write_bytes_atomic(tmp_path / "b.png", b"y")
    assert a.stat().st_mode & 0o777 == 0o644 and b.stat().st_mode & 0o777 == 0o644
    assert (a.read_bytes(), b.read_bytes()) == (b"x", b"y")
    os.umask(0o077)
    assert write_bytes_atomic(tmp_path / "c", b"z").stat().st_mode & 0o777 == 0o600  # the umask decides
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "b.png", "c"]


def test_overwrite_is_whole_and_a_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "f.bin"
    write_bytes_atomic(path, b"long old contents")
    write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"new"

    def fail(tmp):
        open(tmp, "wb").write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(WriteError, match="cannot write .*f.bin: No space left on device"):
        atomic_write(path, fail)
    assert path.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]
