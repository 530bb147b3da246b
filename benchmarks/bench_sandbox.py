"""Sandbox benchmarks: per-task overhead of the worker pool, tiny-task throughput, matmul block kernel.

    .venv/bin/python benchmarks/bench_sandbox.py [--quick]

Every ratio compares figures measured in this one run on this machine:
1. per-task overhead: submit -> result of the trivial ``echo`` guest through the worker pool, against a bare
   wasmtime Store + Instance + call (alloc, write, run, read) in this process (target: under 0.5 ms);
2. throughput of tiny tasks per second on all cores (target: >= 2,000/s on 2 cores);
3. tasks over chunk lists (``run_chunks``, one round trip per task): tasks/s and chunks/s through the pool
   for several chunk counts, against the in-process executor on one core and against one-chunk tasks;
4. the ``matmul_block`` guest against numpy (one BLAS thread) and against pure Python on the same block.
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

import numpy as np
import trio
from wasmtime import Instance, Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pangea_p2p.core.cid import cid_of
from pangea_p2p.guests import load_guest
from pangea_p2p.sandbox import Executor, SandboxConfig, SandboxLimits, measure_speed, open_sandbox

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
    print(f"  worker pool submit -> result ({workers} workers, trio caller):       {_median_us(pool):8.1f} us "
          f"(p90 {_pct_us(pool, 0.9):.1f}, p99 {_pct_us(pool, 0.99):.1f})")
    print(f"  pool overhead over bare: {overhead_us:.1f} us  (target < 500 us: "
          f"{'MET' if overhead_us < 500 else 'MISSED'}; ratio pool/bare {_median_us(pool) / _median_us(bare):.2f}x; "
          f"seed system's claim 10 ms is {10_000 / max(overhead_us, 1e-9):.0f}x this)")
    print("\n== throughput of tiny tasks on all cores")
    print(f"  {rate:,.0f} tasks/s with {workers} workers "
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
