"""Sandbox benchmarks: per-task overhead of the worker pool, tiny-task throughput, matmul block kernel.

    .venv/bin/python benchmarks/bench_sandbox.py [--quick]

Every ratio compares figures measured in this one run on this machine:
1. per-task overhead: submit -> result of the trivial ``echo`` guest through the worker pool, against a bare
   wasmtime Store + Instance + call (alloc, write, run, read) in this process (target: under 0.5 ms);
2. throughput of tiny tasks per second on all cores (target: >= 2,000/s on 2 cores);
3. tasks over chunk lists (``run_chunks``, one round trip per task): tasks/s and chunks/s through the pool
   for several chunk counts, against the in-process executor on one core and against one-chunk tasks;
4. the ``matmul_block`` guest against numpy (one BLAS thread) and against pure Python on the same block;
5. Python execute steps: per-task overhead of a trivial step (upper-case) against the same step as a C guest,
   warm cache, in this process and through the pool (target: <= 10 ms per task), and fuel per second of a
   byte-checksum loop in Python against the same loop in C;
6. compile bombs: RSS of a sandbox process at start and after it was asked to compile a hostile set
   (modules refused by shape, by the compile deadline and by the compile memory cap; target: back within
   20 MiB), and the wall time each refusal took.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads: a one-core comparison

import argparse
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import trio
from wasmtime import Instance, Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pangea_p2p.core.cid import cid_of
from pangea_p2p.guests import load_guest
from pangea_p2p.guests.toolchain import build_guest, new_guest
from pangea_p2p.sandbox import Executor, SandboxConfig, SandboxLimits, measure_speed, open_sandbox
from pangea_p2p.sandbox.pystep import PythonStep
from tests.sandbox.conftest import HEAVY_BODY, bulk_module

CHUNK_COUNTS = [1, 4, 16, 64, 256]


def _median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def _pct_us(samples: list[float], q: float) -> float:
    return sorted(samples)[min(len(samples) - 1, int(q * len(samples)))] * 1e6


def bare_call_samples(executor: Executor, n: int) -> list[float]:
    """Store + Instance + alloc/write/run/read with wasmtime-py's public API, same engine, same module."""
    module = executor.compile(cid_of(load_guest("echo")), load_guest("echo")).module
    data = b"hello"
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        store = Store(executor.engine)
        store.set_fuel(10**9)
        store.set_epoch_deadline(1000)
        exports = Instance(store, module, []).exports(store)
        ptr = exports["alloc"](store, len(data))
        exports["memory"].write(store, data, ptr)
        packed = exports["run"](store, ptr, len(data))
        exports["memory"].read(store, packed & 0xFFFFFFFF, (packed & 0xFFFFFFFF) + (packed >> 32))
        samples.append(time.perf_counter() - t0)
    return samples


def executor_samples(executor: Executor, n: int) -> list[float]:
    module = load_guest("echo")
    cid = cid_of(module)
    limits = SandboxLimits()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        executor.run(cid, module, b"hello", limits).unwrap()
        samples.append(time.perf_counter() - t0)
    return samples


def executor_chunk_rate(executor: Executor, chunks_per_task: int, tasks: int) -> float:
    """Chunks per second of ``run_chunks`` in this process (one core), tiny chunks."""
    module = load_guest("echo")
    cid = cid_of(module)
    chunks = [b"hello"] * chunks_per_task
    t0 = time.perf_counter()
    for _ in range(tasks):
        executor.run_chunks(cid, module, chunks).unwrap()
    return tasks * chunks_per_task / (time.perf_counter() - t0)


async def pool_chunk_figures(chunk_counts: list[int], throughput_s: float) -> dict[int, tuple[float, float]]:
    """{chunks per task: (tasks/s, chunks/s)} through the pool on all cores, tiny chunks."""
    module = load_guest("echo")
    cid = cid_of(module)
    config = SandboxConfig()
    figures = {}
    async with open_sandbox(config) as sandbox:
        await sandbox.wait_ready()
        for _ in range(50):
            await sandbox.run_chunks(cid, module, [b"hello"] * 4)
        for count in chunk_counts:
            chunks = [b"hello"] * count
            done = 0
            deadline = time.perf_counter() + throughput_s

            async def caller(chunks: list[bytes] = chunks, deadline: float = deadline) -> None:
                nonlocal done
                while time.perf_counter() < deadline:
                    (await sandbox.run_chunks(cid, module, chunks)).unwrap()
                    done += 1

            t0 = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(2 * config.workers):
                    nursery.start_soon(caller)
            rate = done / (time.perf_counter() - t0)
            figures[count] = (rate, rate * count)
    return figures


async def pool_figures(n: int, throughput_s: float) -> tuple[list[float], float, int]:
    module = load_guest("echo")
    cid = cid_of(module)
    config = SandboxConfig()
    async with open_sandbox(config) as sandbox:
        await sandbox.wait_ready()
        for _ in range(200):  # warm-up: every worker compiles the module
            await sandbox.run(cid, module, b"hello")
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            (await sandbox.run(cid, module, b"hello")).unwrap()
            samples.append(time.perf_counter() - t0)
        done = 0
        deadline = time.perf_counter() + throughput_s

        async def caller() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                (await sandbox.run(cid, module, b"hello")).unwrap()
                done += 1

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(4 * config.workers):
                nursery.start_soon(caller)
        rate = done / (time.perf_counter() - t0)
    return samples, rate, config.workers


def matmul_figures(executor: Executor, block: int, k: int, python_repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((block, k)), rng.standard_normal((k, block))
    payload = struct.pack("<IIII", block, k, block, 0) + a.tobytes() + b.tobytes()
    module = load_guest("matmul_block")
    cid = cid_of(module)
    limits = SandboxLimits(memory_bytes_max=64 << 20)
    executor.run(cid, module, payload, limits).unwrap()
    wasm = []
    for _ in range(10):
        t0 = time.perf_counter()
        out = executor.run(cid, module, payload, limits).unwrap()
        wasm.append(time.perf_counter() - t0)
    c = np.frombuffer(out[16:], "<f8").reshape(block, block)
    numpy_t = []
    for _ in range(50):
        t0 = time.perf_counter()
        ref = a @ b
        numpy_t.append(time.perf_counter() - t0)
    al, bl = a.tolist(), b.tolist()
    py_t = []
    for _ in range(python_repeats):
        t0 = time.perf_counter()
        bt = list(zip(*bl, strict=True))
        [[sum(x * y for x, y in zip(row, col, strict=True)) for col in bt] for row in al]
        py_t.append(time.perf_counter() - t0)
    return {
        "wasm_s": statistics.median(wasm), "numpy_s": statistics.median(numpy_t), "python_s": statistics.median(py_t),
        "max_rel_err": float(np.max(np.abs(c - ref)) / np.max(np.abs(ref))),
    }


CHECKSUM_C = """#include "pangea_guest.h"
uint64_t pg_main(const uint8_t *in, uint32_t len) {
    uint32_t *out = pg_alloc(4), h = 0;
    for (uint32_t i = 0; i < len; i++) h = h * 31u + in[i];
    *out = h;
    PG_OUTPUT(out, 4);
}
"""
CHECKSUM_PY = """def step(chunk):
    h = 0
    for b in chunk:
        h = (h * 31 + b) & 0xFFFFFFFF
    return h.to_bytes(4, 'little')
"""
UPPER_PY = "def step(chunk):\n    return chunk.upper()\n"


def c_guest(workdir: Path, name: str, source: str | None = None) -> bytes:
    """The C template guest (upper-case), or ``source`` in its place, built with the pinned ziglang."""
    new_guest(workdir / name, "c")
    if source is not None:
        (workdir / name / f"{name}.c").write_text(source)
    return build_guest(workdir / name, cache_dir=workdir / "zig").read_bytes()


def _per_task_ms(run: Any, n: int) -> float:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        run()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e3


async def _pool_ms(modules: dict[str, bytes], n: int) -> dict[str, float]:
    out = {}
    async with open_sandbox(SandboxConfig(workers=1)) as sandbox:
        for name, module in modules.items():
            cid = cid_of(module)
            (await sandbox.run(cid, module, b"hello")).unwrap()  # compiled: the cache is warm
            samples = []
            for _ in range(n):
                t0 = time.perf_counter()
                (await sandbox.run(cid, module, b"hello")).unwrap()
                samples.append(time.perf_counter() - t0)
            out[name] = statistics.median(samples) * 1e3
    return out


def python_step_figures(n: int) -> dict[str, Any]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        upper_c = c_guest(Path(tmp), "upper")
        checksum_c = c_guest(Path(tmp), "checksum", CHECKSUM_C)
    upper_py = PythonStep.of_source(UPPER_PY, "step").encode()
    checksum_py = PythonStep.of_source(CHECKSUM_PY, "step").encode()
    data = bytes(range(256)) * 256  # 64 KiB
    figures: dict[str, Any] = {}
    with Executor(SandboxConfig(workers=1)) as ex:
        for name, module in (("c", upper_c), ("python", upper_py)):
            cid = cid_of(module)
            assert ex.run(cid, module, b"hello").unwrap() == b"HELLO"
            figures[f"inproc_{name}_ms"] = _per_task_ms(lambda cid=cid, module=module: ex.run(cid, module, b"hello"),
                                                        n)
        for name, module in (("c", checksum_c), ("python", checksum_py)):
            cid = cid_of(module)
            results = [ex.run(cid, module, data) for _ in range(3)]
            figures[f"checksum_{name}"] = results[0].unwrap()
            best = min(r.report.wall_time_s for r in results)
            figures[f"fuel_{name}"] = results[0].report.fuel_used
            figures[f"fuel_per_s_{name}"] = results[0].report.fuel_used / best
            figures[f"checksum_s_{name}"] = best
    figures.update({f"pool_{k}_ms": v for k, v in trio.run(_pool_ms, {"c": upper_c, "python": upper_py},
                                                           max(20, n // 10)).items()})
    return figures


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(next(ln for ln in f if ln.startswith("VmRSS:")).split()[1]) / 1024


async def hostile_rss_figures() -> list[tuple[str, float, str]]:
    """(module, seconds to the refusal, the refusal) for each hostile module; RSS before and after last."""
    config = SandboxConfig(workers=1, compile_time_s_max=1.0, compile_memory_bytes_max=512 << 20,
                           module_functions_max=200_000)
    hostile = {
        "150,000 empty functions (shape, default limit)": bulk_module(150_000),
        "a 1.2 MB function body (shape)": bulk_module(1, b"\x00" + b"\x01\x01" * 600_000 + b"\x0b"),
        "a 10M-element table (shape)": bulk_module(1, table=10_000_000),
        "19,000 heavy functions (compile deadline 1 s)": bulk_module(19_000, HEAVY_BODY),
        "100,000 empty functions (compile budget 1 s, 512 MiB)": bulk_module(100_000),
        "100,001 empty functions (the same, a new CID)": bulk_module(100_001),
    }
    rows = []
    echo = load_guest("echo")
    async with open_sandbox(config) as sandbox:
        (await sandbox.run(cid_of(echo), echo, b"warm")).unwrap()
        (pid,) = sandbox.process_pids()
        before = _rss_mib(pid)
        for name, (cid, module) in hostile.items():
            strict = name.endswith("(shape, default limit)")
            t0 = time.perf_counter()
            if strict:  # the default module_functions_max, in a pool of its own
                async with open_sandbox(SandboxConfig(workers=1)) as other:
                    result = await other.run(cid, module, b"")
            else:
                result = await sandbox.run(cid, module, b"")
            refusal = f"{result.failure.kind.name}: {result.failure.message[:70]}" if result.failure else "ran"
            rows.append((name, time.perf_counter() - t0, refusal))
        after = _rss_mib(pid)
        assert sandbox.process_pids() == [pid]
    rows.append(("RSS of the sandbox process, MiB: before / after", before, f"{after:.1f}"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    args = parser.parse_args()
    n = 300 if args.quick else 3000

    t0 = time.perf_counter()
    speed = measure_speed()
    print(f"measure_speed: {speed:.3g} fuel/s (took {time.perf_counter() - t0:.3f} s)")

    with Executor(SandboxConfig(workers=1)) as executor:
        bare = bare_call_samples(executor, n)
        inproc = executor_samples(executor, n)
        pool, rate, workers = trio.run(pool_figures, n, 0.5 if args.quick else 2.0)
        inproc_chunks = executor_chunk_rate(executor, 64, 20 if args.quick else 200)
        chunked = trio.run(pool_chunk_figures, CHUNK_COUNTS, 0.5 if args.quick else 2.0)
        mm = matmul_figures(executor, 64, 512, 1 if args.quick else 3)

    overhead_us = _median_us(pool) - _median_us(bare)
    print("\n== per-task overhead, trivial guest (echo, 5 bytes), median of", n)
    print(f"  bare wasmtime Store+Instance+call (public API, this process): {_median_us(bare):8.1f} us")
    print(f"  Executor.run in this process (fast path, limits, metering):   {_median_us(inproc):8.1f} us")
    print(f"  pool submit -> result ({workers} sandbox processes, trio caller): {_median_us(pool):8.1f} us "
          f"(p90 {_pct_us(pool, 0.9):.1f}, p99 {_pct_us(pool, 0.99):.1f})")
    print(f"  pool overhead over bare: {overhead_us:.1f} us  (target < 500 us: "
          f"{'MET' if overhead_us < 500 else 'MISSED'}; ratio pool/bare {_median_us(pool) / _median_us(bare):.2f}x; "
          f"seed system's claim 10 ms is {10_000 / max(overhead_us, 1e-9):.0f}x this)")
    print("\n== throughput of tiny tasks on all cores")
    print(f"  {rate:,.0f} tasks/s with {workers} sandbox processes "
          f"(target >= 2,000/s on 2 cores: {'MET' if rate >= 2000 * workers / 2 else 'MISSED'}; "
          f"a bare in-process loop on one core does {1e6 / _median_us(bare):,.0f}/s)")
    print("\n== tasks over chunk lists (run_chunks: one round trip per task, one guest run per chunk), tiny chunks")
    print(f"  in this process, one core: {inproc_chunks:,.0f} chunks/s")
    for count, (tasks_s, chunks_s) in chunked.items():
        print(f"  pool, {count:4d} chunks/task: {tasks_s:8,.0f} tasks/s = {chunks_s:8,.0f} chunks/s "
              f"({chunks_s / rate:.1f}x one-chunk tasks; {chunks_s / (inproc_chunks * workers):.2f} of "
              f"{workers} in-process cores)")
    print("\n== matmul block 64x512 @ 512x64 float64 (one output block of the 512x512 demo), median")
    print(f"  wasm guest (in-process, incl. copies): {mm['wasm_s'] * 1e3:8.2f} ms")
    print(f"  numpy a @ b (1 BLAS thread):           {mm['numpy_s'] * 1e3:8.3f} ms  "
          f"-> wasm is {mm['wasm_s'] / mm['numpy_s']:.1f}x slower than numpy")
    print(f"  pure Python (zip/sum):                 {mm['python_s'] * 1e3:8.1f} ms  "
          f"-> wasm is {mm['python_s'] / mm['wasm_s']:.1f}x faster than pure Python")
    print(f"  max relative difference wasm vs numpy: {mm['max_rel_err']:.2e} (summation order differs; see ABI)")

    py = python_step_figures(100 if args.quick else 1000)
    print("\n== Python execute steps (MicroPython in wasm) against the same step as a C guest, warm cache, median")
    print(f"  trivial step (upper-case 5 bytes), in this process: Python {py['inproc_python_ms']:.2f} ms, "
          f"C {py['inproc_c_ms']:.3f} ms ({py['inproc_python_ms'] / py['inproc_c_ms']:.0f}x)")
    print(f"  the same through the pool:                          Python {py['pool_python_ms']:.2f} ms, "
          f"C {py['pool_c_ms']:.3f} ms  (target <= 10 ms per task: "
          f"{'MET' if py['pool_python_ms'] <= 10 else 'MISSED'})")
    same = "same checksum" if py["checksum_python"] == py["checksum_c"] else "CHECKSUMS DIFFER"
    print(f"  checksum loop over 64 KiB ({same}): Python {py['checksum_s_python'] * 1e3:.1f} ms, "
          f"{py['fuel_python']:,} fuel = {py['fuel_per_s_python']:.3g} fuel/s; C {py['checksum_s_c'] * 1e3:.3f} ms, "
          f"{py['fuel_c']:,} fuel = {py['fuel_per_s_c']:.3g} fuel/s -> Python needs "
          f"{py['fuel_python'] / py['fuel_c']:.0f}x the fuel and {py['checksum_s_python'] / py['checksum_s_c']:.0f}x "
          "the time")

    rows = trio.run(hostile_rss_figures)
    print("\n== compile bombs: each refusal, and the sandbox process's memory")
    for name, seconds, refusal in rows[:-1]:
        print(f"  {name:52s} {seconds:6.2f} s  {refusal}")
    name, before, after = rows[-1]
    grew = float(after) - before
    print(f"  {name}: {before:.1f} / {after} (grew {grew:.1f} MiB; target within 20 MiB: "
          f"{'MET' if grew <= 20 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
