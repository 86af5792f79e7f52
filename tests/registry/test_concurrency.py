"""4 writer processes × 250 inserts while another process reads in a loop: nothing lost, no read
errors, and the table file is valid JSON whenever it is looked at."""

import json
import multiprocessing as mp
import os
import time

import pytest

from registry import Output, Registry

pytestmark = pytest.mark.slow  # writer and reader processes (over 10 s on 2 cores)

WRITERS, PER_WRITER = 4, 250


def _writer(home, n, tag):
    os.environ["STYLER_HOME"] = home
    reg = Registry(home)
    for i in range(n):
        reg.insert(Output(prompt=f"{tag}-{i}"))


def _reader(home, stop, result):
    reg = Registry(home)
    reads = errors = invalid = 0
    path = reg.table_path("outputs")
    while not stop.is_set():
        try:
            reg.count(Output)
            reads += 1
        except Exception:
            errors += 1
        # also look at the raw file without the lock: atomic replace means it is always whole
        try:
            if path.exists():
                json.loads(path.read_bytes())
        except ValueError:
            invalid += 1
    result.put((reads, errors, invalid))


def test_concurrent_writers_and_reader_lose_nothing(styler_home):
    ctx = mp.get_context("spawn")
    home = str(styler_home)
    Registry(home).count(Output)  # run migrations once up front
    stop, result = ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=_reader, args=(home, stop, result))
    reader.start()
    writers = [ctx.Process(target=_writer, args=(home, PER_WRITER, f"w{k}")) for k in range(WRITERS)]
    t0 = time.perf_counter()
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=300)
        assert w.exitcode == 0
    stop.set()
    reads, errors, invalid = result.get(timeout=60)
    reader.join(timeout=60)
    elapsed = time.perf_counter() - t0

    prompts = [o.prompt for o in Registry(home).all(Output)]
    assert len(prompts) == WRITERS * PER_WRITER
    assert set(prompts) == {f"w{k}-{i}" for k in range(WRITERS) for i in range(PER_WRITER)}
    assert errors == 0 and invalid == 0
    assert reads > 0
    print(f"{WRITERS * PER_WRITER} inserts in {elapsed:.1f}s with {reads} concurrent reads")
