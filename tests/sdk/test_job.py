"""The job DSL run in this process (``run_local``): definition, splitting, built-in guests, errors, merge order,
and one Job definition shared by several threads."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import struct
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pangea_p2p.errors import ConfigError, InvalidModule, OutOfFuel, SandboxError, Timeout, Trap
from pangea_p2p.guests import load_guest
from pangea_p2p.sandbox import SandboxLimits
from pangea_p2p.sdk import Job, Limits, splits

TEXT = (b"The quick brown Fox jumps over the lazy dog.\nthe DOG sleeps; the fox runs \xc3\xa9t\xc3\xa9 42 times\n"
        b"\n  fox-fox FOX 42\nno newline at the end")


def listing(job: Job[list[bytes]]) -> Job[list[bytes]]:
    """Give ``job`` a split that takes a list of chunks as they are and a merge that returns the outputs."""
    job.split(lambda chunks: chunks)
    job.merge(lambda outputs: outputs)
    return job


def word_counts(text: bytes) -> Counter[bytes]:
    """The reference for the wordcount guests (protocols/guest-abi.md): runs of [A-Za-z0-9] or >= 0x80,
    ASCII letters lower-cased."""
    return Counter(w.lower() for w in re.findall(rb"[A-Za-z0-9\x80-\xff]+", text))


def decode_table(table: bytes) -> dict[bytes, int]:
    """A wordcount table: u32 entries, then (u32 word_len, word, u64 count), sorted by word, no duplicates."""
    (entries,) = struct.unpack_from("<I", table, 0)
    pos, out = 4, {}
    for _ in range(entries):
        (n,) = struct.unpack_from("<I", table, pos)
        word = table[pos + 4 : pos + 4 + n]
        (count,) = struct.unpack_from("<Q", table, pos + 4 + n)
        out[word] = count
        pos += 12 + n
    assert pos == len(table), "trailing bytes after the table"
    assert list(out) == sorted(out), "table not sorted by word bytes"
    return out


# --- definition -------------------------------------------------------------------------------------------


def test_chunks_applies_the_split_function() -> None:
    job: Job[None] = Job("sizes", guest="echo")
    job.split(lambda data: splits.fixed_size(data, 4))
    job.merge(lambda outputs: None)
    assert job.chunks(b"abcdefghij") == [b"abcd", b"efgh", b"ij"]
    assert job.chunks(bytearray(b"xy")) == [b"xy"]


def test_chunks_accepts_bytes_like_chunks_as_bytes() -> None:
    job = listing(Job("any", guest="echo"))
    chunks = job.chunks([bytearray(b"ab"), memoryview(b"cd"), b"ef"])
    assert chunks == [b"ab", b"cd", b"ef"]
    assert all(type(c) is bytes for c in chunks)


def test_split_with_metadata_in_each_chunk() -> None:
    # each chunk carries a header (index, offset, length) ahead of its slice; echo returns it unchanged and
    # merge rebuilds the input from the headers alone, checking they arrive in chunk order
    header = struct.Struct("<III")
    data = bytes(range(256)) * 2

    job: Job[bytes] = Job("meta", guest="echo", chunks_per_task=3)

    @job.split
    def split(blob: bytes) -> list[bytes]:
        return [header.pack(i, off, len(part)) + part
                for i, (off, part) in enumerate((o, blob[o : o + 37]) for o in range(0, len(blob), 37))]

    @job.merge
    def merge(outputs: list[bytes]) -> bytes:
        rebuilt = bytearray()
        for i, out in enumerate(outputs):
            index, offset, length = header.unpack_from(out)
            assert (index, offset, len(out) - header.size) == (i, len(rebuilt), length)
            rebuilt += out[header.size :]
        return bytes(rebuilt)

    assert len(job.chunks(data)) == 14  # 13 of 37 bytes and a last one of 31
    assert job.run_local(data) == data


def test_split_returning_no_chunks_is_a_config_error() -> None:
    job = listing(Job("empty", guest="echo"))
    with pytest.raises(ConfigError, match="split returned no chunks") as info:
        job.chunks([])
    assert info.value.key == "split"


@pytest.mark.parametrize(
    ("returned", "match"),
    [(b"abc", "not one bytes"), ("abc", "not one str"), ([b"ok", 3], "chunk 1 is a int"), ([None], "chunk 0 is a")],
)
def test_split_returning_something_else_than_chunks_is_a_config_error(returned: object, match: str) -> None:
    # b"abc" iterated is [97, 98, 99], and bytes(97) is 97 zero bytes: it must not run as three chunks
    job: Job[list[bytes]] = Job("wrong", guest="echo")
    job.split(lambda _: returned)  # type: ignore[arg-type,return-value]
    job.merge(lambda outputs: outputs)
    with pytest.raises(ConfigError, match=match) as info:
        job.run_local(None)
    assert info.value.key == "split"


@pytest.mark.parametrize("step", ["split", "merge", "guest"])
def test_a_missing_step_is_named(step: str) -> None:
    job: Job[list[bytes]] = Job("incomplete", guest=None if step == "guest" else "echo")
    if step != "split":
        job.split(lambda chunks: chunks)
    if step != "merge":
        job.merge(lambda outputs: outputs)
    expected = {"split": "has no split step", "merge": "has no merge step", "guest": "has no execute (guest) step"}
    with pytest.raises(ConfigError, match=re.escape(expected[step])):
        job.run_local([b"x"])
    with pytest.raises(ConfigError, match=re.escape(expected[step])):
        job.chunks([b"x"])


def test_every_missing_step_is_named_at_once() -> None:
    with pytest.raises(ConfigError, match=re.escape("job 'bare' has no split, merge, execute (guest) step")):
        Job("bare").run_local(b"")


def test_defining_split_or_merge_twice_is_a_config_error() -> None:
    job = listing(Job("twice", guest="echo"))
    with pytest.raises(ConfigError, match="already has a split function") as info:
        job.split(lambda chunks: chunks)
    assert info.value.key == "split"
    with pytest.raises(ConfigError, match="already has a merge function") as info:
        job.merge(lambda outputs: outputs)
    assert info.value.key == "merge"
    assert job.run_local([b"still the first definitions"]) == [b"still the first definitions"]


def test_decorators_return_the_function() -> None:
    job: Job[int] = Job("deco", guest="echo")

    @job.split
    def split(data: bytes) -> list[bytes]:
        return [data]

    @job.merge
    def merge(outputs: list[bytes]) -> int:
        return len(outputs[0])

    assert split(b"abc") == [b"abc"]
    assert merge([b"ab"]) == 2
    assert job.run_local(b"hello") == 5


def test_unknown_guest_name_and_unreadable_path_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no_such_guest is neither a built-in guest") as info:
        Job("x", guest="no_such_guest")
    assert info.value.key == "guest"
    assert "sha256" in str(info.value)  # lists the built-in guests
    job: Job[None] = Job("x")
    with pytest.raises(ConfigError, match=r"nor a readable \.wasm file \(No such file or directory\)") as info:
        job.execute(tmp_path / "missing.wasm")
    assert info.value.key == "guest"
    with pytest.raises(ConfigError, match="Is a directory"):
        job.execute(tmp_path)


def test_execute_from_a_path_and_from_bytes(tmp_path: Path) -> None:
    path = tmp_path / "echo.wasm"
    path.write_bytes(load_guest("echo"))
    job = listing(Job("path"))
    job.execute(path)
    assert job.run_local([b"via a path"]) == [b"via a path"]
    job.execute(load_guest("sha256"))  # the execute step may be replaced
    assert job.run_local([b"abc"]) == [hashlib.sha256(b"abc").digest()]


def test_bad_definition_values_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="'bogus'") as info:
        Job("x", guest="echo", verification="bogus")
    assert info.value.key == "verification"
    for bad in (0, -2):
        with pytest.raises(ConfigError, match=f"got {bad}") as info:
            Job("x", guest="echo", chunks_per_task=bad)
        assert info.value.key == "chunks_per_task"


@pytest.mark.parametrize(
    ("limits", "key"),
    [({"fuel_max": 0}, "fuel_max"), ({"memory_bytes_max": 1000}, "memory_bytes_max"),
     ({"wall_time_s": 0.0}, "wall_time_s"), ({"output_bytes_max": -1}, "output_bytes_max"),
     ({"fuel_max": 10**16}, "fuel_max"), ({"memory_bytes_max": 5 << 30}, "memory_bytes_max"),
     ({"wall_time_s": 1e6}, "wall_time_s"), ({"output_bytes_max": 2 << 30}, "output_bytes_max")],
)
def test_limits_no_sandbox_can_take_are_config_errors_at_once(limits: dict[str, float], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Limits(**limits)  # type: ignore[arg-type]
    assert info.value.key == f"limits.{key}"
    assert info.value.problem.startswith("must be in ")


def test_the_limits_bounds_are_the_sandboxs() -> None:
    for edge in (Limits(fuel_max=1, memory_bytes_max=64 << 10, wall_time_s=0.001, output_bytes_max=0),
                 Limits(fuel_max=10**15, memory_bytes_max=4 << 30, wall_time_s=86400, output_bytes_max=1 << 30)):
        SandboxLimits(**dataclasses.asdict(edge))  # the sandbox takes both ends (else a ConfigError)


# --- chunk execution with built-in guests -----------------------------------------------------------------


@pytest.mark.parametrize("chunk_bytes", [1, 7, 64, 10_000])
def test_sha256_per_chunk_matches_hashlib(chunk_bytes: int) -> None:
    data = bytes(range(256)) * 3 + b"tail"
    job: Job[list[bytes]] = Job("sha", guest="sha256", chunks_per_task=4)
    job.split(lambda d: splits.fixed_size(d, chunk_bytes))
    job.merge(lambda outputs: outputs)
    assert job.run_local(data) == [hashlib.sha256(c).digest() for c in splits.fixed_size(data, chunk_bytes)]


def test_sha256_of_an_empty_input_runs_once() -> None:
    job: Job[list[bytes]] = Job("sha-empty", guest="sha256")
    job.split(lambda d: splits.fixed_size(d, 16))
    job.merge(lambda outputs: outputs)
    assert job.run_local(b"") == [hashlib.sha256(b"").digest()]


def test_wordcount_map_then_python_merge_matches_counter() -> None:
    job: Job[Counter[bytes]] = Job("wc", guest="wordcount_map", chunks_per_task=2)

    @job.split
    def split(text: bytes) -> list[bytes]:
        return splits.lines(text, 2)

    @job.merge
    def merge(outputs: list[bytes]) -> Counter[bytes]:
        total: Counter[bytes] = Counter()
        for table in outputs:
            total.update(decode_table(table))
        return total

    assert len(job.chunks(TEXT)) == 3
    assert job.run_local(TEXT) == word_counts(TEXT)
    assert job.run_local(TEXT)[b"fox"] == 5


def test_wordcount_reduce_guest_sums_map_tables() -> None:
    mapper: Job[list[bytes]] = Job("map", guest="wordcount_map")
    mapper.split(lambda text: splits.lines(text, 1))
    mapper.merge(lambda outputs: outputs)
    tables = mapper.run_local(TEXT)
    reducer: Job[dict[bytes, int]] = Job("reduce", guest="wordcount_reduce")
    reducer.split(lambda ts: [b"".join(ts)])  # one chunk: all tables concatenated
    reducer.merge(lambda outputs: decode_table(outputs[0]))
    assert reducer.run_local(tables) == dict(word_counts(TEXT))


def test_wordcount_reduce_refuses_a_malformed_table() -> None:
    job = listing(Job("reduce", guest="wordcount_reduce"))
    with pytest.raises(SandboxError, match="chunk 0") as info:
        job.run_local([b"\x05\x00\x00\x00garbage"])
    assert info.value.kind.name == "INVALID_INPUT"


# --- merge and its order ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("chunks", "per_task"), [(7, 3), (7, 1), (5, 5), (5, 100), (1, 4), (9, 2)])
def test_merge_gets_outputs_in_chunk_order(chunks: int, per_task: int) -> None:
    inputs = [f"chunk {i}".encode() * (i + 1) for i in range(chunks)]
    seen: list[list[bytes]] = []
    job: Job[int] = Job("order", guest="echo", chunks_per_task=per_task)
    job.split(lambda data: data)
    job.merge(lambda outputs: seen.append(outputs) or len(outputs))
    assert job.run_local(inputs) == chunks
    assert seen == [inputs]


def test_merge_error_propagates_and_the_job_runs_again() -> None:
    calls: list[list[bytes]] = []

    class MergeBroke(Exception):
        pass

    job: Job[bytes] = Job("flaky-merge", guest="echo")
    job.split(lambda data: [data[:2], data[2:]])

    @job.merge
    def merge(outputs: list[bytes]) -> bytes:
        calls.append(outputs)
        if len(calls) == 1:
            raise MergeBroke("merge failed on purpose")
        return b"+".join(outputs)

    with pytest.raises(MergeBroke, match="merge failed on purpose"):
        job.run_local(b"abcd")
    assert job.run_local(b"wxyz") == b"wx+yz"
    assert calls == [[b"ab", b"cd"], [b"wx", b"yz"]]


def test_split_error_propagates_unchanged() -> None:
    job: Job[None] = Job("bad-split", guest="echo")

    @job.split
    def split(data: bytes) -> list[bytes]:
        raise KeyError("no such column")

    job.merge(lambda outputs: None)
    with pytest.raises(KeyError, match="no such column"):
        job.run_local(b"")


# --- hostile guests and typed errors ----------------------------------------------------------------------


def test_fuel_bomb_with_a_small_budget_is_out_of_fuel_naming_the_chunk() -> None:
    job = listing(Job("bomb", guest="fuel_bomb", limits=Limits(fuel_max=2_000_000)))
    with pytest.raises(OutOfFuel, match=r"^chunk 0: .*fuel budget of 2000000") as info:
        job.run_local([b""])
    assert isinstance(info.value, SandboxError)


def test_infinite_loop_stops_at_the_wall_time_limit() -> None:
    job = listing(Job("loop", guest="infinite_loop", limits=Limits(wall_time_s=0.05)))
    with pytest.raises(Timeout, match=r"^chunk 0: .*wall-time limit of 0.05 s"):
        job.run_local([b""])


def test_the_failing_chunk_index_counts_across_tasks() -> None:
    # probe: "E..." echoes, "Tu" traps with `unreachable`; chunk 4 is the first chunk of the third task
    spin = b"F" + struct.pack("<I", 100_000_000)
    job = listing(Job("probe", guest="probe", chunks_per_task=2))
    with pytest.raises(Trap, match=r"^chunk 4: .*unreachable") as info:
        job.run_local([b"Ea", b"Eb", b"Ec", b"Ed", b"Tu", b"Ef"])
    assert info.value.trap_kind == "unreachable"
    budget = listing(Job("spin", guest="probe", chunks_per_task=3, limits=Limits(fuel_max=1_000_000)))
    with pytest.raises(OutOfFuel, match=r"^chunk 2: "):
        budget.run_local([b"Ea", b"Eb", spin])


def test_an_invalid_module_fails_the_whole_task() -> None:
    job = listing(Job("junk", guest=b"not a wasm module", chunks_per_task=2))
    with pytest.raises(InvalidModule, match=r"^the task of chunks 0\.\.1: .*not a WebAssembly binary"):
        job.run_local([b"a", b"b", b"c"])


# --- one Job, several threads -----------------------------------------------------------------------------


def test_threads_running_one_job_get_their_own_results() -> None:
    threads = 6
    job: Job[list[bytes]] = Job("shared", guest="sha256", chunks_per_task=2)
    job.split(lambda data: splits.fixed_size(data, 5))
    job.merge(lambda outputs: outputs)
    inputs = [f"input of thread {i} ".encode() * (i + 2) for i in range(threads)]
    start = threading.Barrier(threads)

    def work(data: bytes) -> list[bytes]:
        start.wait()
        return job.run_local(data)

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(work, inputs))
    for data, result in zip(inputs, results, strict=True):
        assert result == [hashlib.sha256(c).digest() for c in splits.fixed_size(data, 5)]


def test_a_failing_run_does_not_disturb_another_thread() -> None:
    job = listing(Job("mixed", guest="probe", limits=Limits(fuel_max=50_000_000)))
    start = threading.Barrier(2)

    def work(chunks: list[bytes]) -> list[bytes] | str:
        start.wait()
        try:
            return job.run_local(chunks)
        except Trap as exc:
            return str(exc)

    with ThreadPoolExecutor(2) as pool:
        good = pool.submit(work, [b"Eleft", b"Eright"])
        bad = pool.submit(work, [b"Eok", b"Td"])
        assert good.result() == [b"left", b"right"]
        assert str(bad.result()).startswith("chunk 1: ")


def test_concurrent_registration_keeps_exactly_one_function_of_each() -> None:
    threads = 16
    job: Job[tuple[int, list[bytes]]] = Job("race", guest="echo")
    start = threading.Barrier(threads)

    def register(i: int) -> tuple[int | None, int | None]:
        start.wait()
        won: list[int | None] = []
        for decorator, fn in ((job.split, lambda data: [bytes([i])]), (job.merge, lambda outputs: (i, outputs))):
            try:
                decorator(fn)  # type: ignore[operator]
                won.append(i)
            except ConfigError:
                won.append(None)
        return won[0], won[1]

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(register, range(threads)))
    split_winners = [s for s, _ in results if s is not None]
    merge_winners = [m for _, m in results if m is not None]
    assert len(split_winners) == 1
    assert len(merge_winners) == 1
    assert job.run_local(None) == (merge_winners[0], [bytes([split_winners[0]])])
