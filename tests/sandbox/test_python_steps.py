"""Python execute steps under attack: every hostile step gets its typed failure, the sandbox serves the next
task, runs are deterministic (output, log and fuel), and the step's format is checked."""

from __future__ import annotations

import pytest
import trio

from pangea_p2p.core.cid import cid_of
from pangea_p2p.errors import FailureKind, InvalidModule
from pangea_p2p.sandbox import Executor, SandboxConfig, SandboxLimits, open_sandbox
from pangea_p2p.sandbox.local import local_executor
from pangea_p2p.sandbox.pystep import MICROPYTHON_CID, PythonStep, interpreter_bytes, parse_step

MiB = 1 << 20
LIMITS = SandboxLimits(fuel_max=2 * 10**9, memory_bytes_max=16 * MiB, wall_time_s=5.0, output_bytes_max=1 * MiB)


def step(body: str, entry: str = "step") -> tuple[str, bytes]:
    module = PythonStep.of_source(body, entry).encode()
    return cid_of(module), module


@pytest.fixture(scope="module")
def ex():
    with local_executor() as executor:  # the interpreter compiled once for the module's tests
        yield executor


ECHO = "def step(chunk):\n    print('saw', len(chunk))\n    return chunk.upper()\n"

# Each hostile step, the failure it must get, and a phrase of its message.
HOSTILE = {
    "infinite_loop": ("def step(c):\n    while True:\n        pass\n", FailureKind.OUT_OF_FUEL, "fuel"),
    "memory_bomb": ("def step(c):\n    hog = []\n    while True:\n        hog.append(bytearray(1 << 20))\n",
                    FailureKind.MEMORY_LIMIT_EXCEEDED, "MemoryError"),
    "one_huge_allocation": ("def step(c):\n    return b'x' * (1 << 30)\n", FailureKind.MEMORY_LIMIT_EXCEEDED,
                            "MemoryError"),
    "recursion_bomb": ("def step(c):\n    return step(c)\n", FailureKind.STACK_OVERFLOW, "recursion"),
    "huge_output": ("def step(c):\n    return b'x' * (2 << 20)\n", FailureKind.OUTPUT_TOO_LARGE, "output"),
    "open_a_file": ("def step(c):\n    return open('/etc/passwd', 'rb').read()\n", FailureKind.TRAP, "OSError"),
    "list_a_directory": ("import os\ndef step(c):\n    return str(os.listdir('/')).encode()\n", FailureKind.TRAP,
                         "OSError"),
    "import_socket": ("import socket\ndef step(c):\n    return c\n", FailureKind.TRAP, "ImportError"),
    "raises": ("def step(c):\n    raise ValueError('boom')\n", FailureKind.TRAP, "ValueError: boom"),
    "syntax_error": ("def step(c)\n    return c\n", FailureKind.TRAP, "SyntaxError"),
    "returns_a_str": ("def step(c):\n    return 'text'\n", FailureKind.TRAP, "not bytes"),
    "calls_sys_exit": ("import sys\ndef step(c):\n    sys.exit(0)\n", FailureKind.TRAP, "sys.exit"),
    "no_such_function": ("def other(c):\n    return c\n", FailureKind.INVALID_MODULE, "no function step"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_step_gets_its_typed_failure_and_the_next_task_runs(ex: Executor, name: str) -> None:
    body, kind, phrase = HOSTILE[name]
    result = ex.run(*step(body), b"input", LIMITS)
    assert result.failure is not None, result.output
    assert result.failure.kind is kind, result.failure
    assert phrase in result.failure.message
    assert ex.run(*step(ECHO), b"next", LIMITS).unwrap() == b"NEXT"


def test_an_endless_printer_stops_at_its_wall_time_and_keeps_the_ends_of_its_log(ex: Executor) -> None:
    limits = SandboxLimits(fuel_max=10**12, memory_bytes_max=16 * MiB, wall_time_s=0.5)
    printer = "def step(c):\n    i = 0\n    while True:\n        print('line', i, '.' * 200)\n        i += 1\n"
    result = ex.run(*step(printer), b"", limits)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.TIMEOUT
    assert result.log.startswith(b"line 0 ...")
    assert b"bytes of log dropped here" in result.log
    assert len(result.log) <= SandboxConfig().log_bytes_max + 200


def test_the_clock_the_environment_and_the_arguments_reveal_nothing(ex: Executor) -> None:
    body = ("import os, sys, time\n"
            "def step(c):\n"
            "    return repr((time.time(), time.ticks_ms(), os.getenv('HOME'), os.getenv('PATH'))).encode()\n")
    assert ex.run(*step(body), b"", LIMITS).unwrap() == b"(0.0, 0, None, None)"


def test_the_garbage_collector_cannot_be_started_and_heavy_allocation_stays_correct(ex: Executor) -> None:
    # With MicroPython's collector on, gc.collect() here freed live objects (wasm locals are not scanned).
    body = """
import gc
def step(chunk):
    gc.enable()
    counts = {}
    for i in range(3000):
        word = ('w%d' % (i % 97)).encode() + b'-' * (i % 5)
        counts[word] = counts.get(word, 0) + len(word)
        if i % 100 == 0:
            gc.collect()
    total = 0
    for k in sorted(counts):
        total = (total * 31 + counts[k] + len(k)) % 1000000007
    return b'%d %d' % (total, len(counts))
"""
    namespace: dict[str, object] = {}
    exec(compile(body.replace("gc.enable()", "pass").replace("gc.collect()", "pass"), "step", "exec"), namespace)
    expected = namespace["step"](b"")  # the same function in CPython
    assert ex.run(*step(body), b"", LIMITS).unwrap() == expected


def test_runs_are_deterministic_in_output_log_and_fuel(ex: Executor) -> None:
    body = "def step(c):\n    print(sorted(set(c.split())))\n    return b','.join(sorted(set(c.split())))\n"
    data = b"b a c a b d"
    first = ex.run(*step(body), data, LIMITS)
    assert first.unwrap() == b"a,b,c,d"
    with Executor(SandboxConfig(workers=1)) as other:  # another engine, as another peer has
        second = other.run(*step(body), data, LIMITS)
    assert (second.output, second.log, second.report.fuel_used) == (first.output, first.log, first.report.fuel_used)


def test_a_task_over_chunks_marks_each_chunks_log(ex: Executor) -> None:
    result = ex.run_chunks(*step(ECHO), [b"ab", b"cde"], LIMITS)
    assert result.unwrap() == [b"AB", b"CDE"]
    assert result.log == b"[chunk 0]\nsaw 2\n[chunk 1]\nsaw 3\n"


def test_a_memory_limit_below_the_minimum_is_a_memory_failure(ex: Executor) -> None:
    result = ex.run(*step(ECHO), b"x", SandboxLimits(memory_bytes_max=4 * MiB))
    assert result.failure is not None
    assert result.failure.kind is FailureKind.MEMORY_LIMIT_EXCEEDED


def test_a_step_for_another_interpreter_is_refused_as_another_peer_might_run_it(ex: Executor) -> None:
    other = PythonStep("bafkreiaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "step", b"def step(c): return c")
    module = other.encode()
    result = ex.run(cid_of(module), module, b"", LIMITS)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.REJECTED
    assert MICROPYTHON_CID in result.failure.message


@pytest.mark.parametrize("data", [
    b"#!pangea-python/1 interpreter=x entry=step\n",
    b"#!pangea-python/1 interpreter=" + MICROPYTHON_CID.encode() + b" entry=1bad\ndef f(c): return c",
    b"#!pangea-python/1 interpreter=" + MICROPYTHON_CID.encode() + b" entry=step\n\xff\xfe",
    b"#!pangea-python/1 no newline at all",
])
def test_malformed_steps_are_invalid_modules(data: bytes) -> None:
    with pytest.raises(InvalidModule):
        parse_step(data)


def test_the_pinned_interpreter_is_installed() -> None:
    assert isinstance(interpreter_bytes(MICROPYTHON_CID), bytes)


async def test_the_pool_returns_a_steps_log_and_survives_its_failures() -> None:
    async with open_sandbox(SandboxConfig(workers=1)) as sandbox:
        bomb = await sandbox.run(*step(HOSTILE["memory_bomb"][0]), b"", LIMITS)
        assert bomb.failure is not None
        assert bomb.failure.kind is FailureKind.MEMORY_LIMIT_EXCEEDED
        with trio.fail_after(60):
            ok = await sandbox.run(*step(ECHO), b"abc", LIMITS)
        assert (ok.unwrap(), ok.log) == (b"ABC", b"saw 3\n")
        assert sandbox.stats().crashed == 0
