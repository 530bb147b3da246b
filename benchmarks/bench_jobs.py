"""Job-layer benchmarks: delegation round trip, the demo's matrix product, tiny-task throughput. Prints figures.

    .venv/bin/python benchmarks/bench_jobs.py [--quick] [--parts 1,2,3,4]

Every ratio compares figures measured in this one run on this machine; every peer listens on 127.0.0.1 only.

1. Delegation round trip: peer A submits a one-chunk ``echo`` job (a few bytes, ``hash`` verification) and waits
   for the verified, signed result from its neighbour B, against a bare py-libp2p stream round trip (write +
   read on a raw stream, as bench_network's bare echo) between the same two hosts, interleaved in the same run.
   A accepts at most 16 MiB of guest memory per task and the job asks for 64 MiB, so A cannot run it itself:
   the scheduler must delegate it (checked: B is the worker of every run). Warm: B already holds the module.
   Target: median under 5 ms (the seed system's figure: 100 ms). A second, instrumented pass time-stamps
   every phase (offer, accept, sandbox run, receipt signing, result, verification) and prints where the time
   goes.
2. The demo's matrix product (512x512 float64, 64x64 output blocks, 4 blocks per task, ``hash``
   verification, one task slot per peer as `pangea demo` runs them) on 1, 2 and 4 peers, against numpy on
   one core (one BLAS thread), against the same 64 guest runs back to back in this process, and against the
   same block-split job on a dask.distributed LocalCluster (2 worker processes, 1 thread each) with the numpy
   kernel and with the same wasm guest as kernel. In both systems a task's input travels with it (a pangea
   worker fetches its 2 MiB input from the submitter; dask ships the chunk inside the task).
   The peers run in this one trio process: the guests already run in sandbox worker processes (one per task
   slot), so on this 2-core machine more OS processes for the peers would only add contention; the figure
   "main process CPU" says how busy the process carrying all peers' py-libp2p traffic was.
3. Tiny-task throughput: one job of many one-chunk ``echo`` tasks (``hash`` verification) submitted to the
   first of 4 peers (default task slots: one per core), tasks/s from submit to the last verified result:
   once as the scheduler places them (the submitter runs many itself: no transfer), once with limits the
   submitter does not accept, so every task crosses the network. Target: >= 1,000 tasks/s on 2 cores (the
   "as placed" figure). A pass under cProfile (this process only: the sandbox workers are other processes)
   sums the profile per cost centre and prints the microseconds per task of each. Two setups, same job:
   3a. all 4 peers in this one trio process: every peer's py-libp2p, receipt and driver work shares one core,
       so its cProfile sees the whole network's per-task cost in one place (the figure to cut costs against,
       and comparable with earlier runs);
   3b. closer to a real deployment (each device runs one peer): the submitter here, each of the 3 workers in
       its own OS process (benchmarks/netcluster.py, as bench_network runs peers), so both cores work; the
       submitter's own per-task cost is then what bounds the rate, and its profile shows it alone.
4. Verifying a job against running it: a text of many lines, one line per chunk (as the README's first SDK
   example splits it), 8 chunks a task, ``hash`` verification, submitted through the SDK to the first of 2 peers
   (its HTTP API, from a thread of this process). The job's time (upload, submit, until done) against
   ``verify_job`` (every receipt, output and input chunk checked offline) reading the job's evidence pages (the
   new path), and against the old path: the result document, then one request per output and per input chunk.
   Target: verification within 20 % of the job's own time.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads: the numpy baseline is one core

import argparse
import cProfile
import logging
import pstats
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pangea_p2p.core.chunks import unframe_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.jobs import codec
from pangea_p2p.core.jobs import coordinator as coordinator_mod
from pangea_p2p.core.jobs import serving as serving_mod
from pangea_p2p.core.jobs.behaviour import JobRun
from pangea_p2p.core.jobs.events import FromIssuer, FromWorker, SendToWorker
from pangea_p2p.core.jobs.model import JobSpec, JobState, VerificationPolicy
from pangea_p2p.core.verify.binding import ReceiptLimits
from pangea_p2p.guests import load_guest
from pangea_p2p.node.compute import ComputeService
from pangea_p2p.node.peer import Peer, open_peer
from pangea_p2p.node.protocols.compute import MessageStream
from pangea_p2p.sandbox import Executor, SandboxConfig, SandboxLimits
from pangea_p2p.sdk.matmul import assemble, block_inputs, matmul_job
from pangea_p2p.testing import local_config, wait_for

HERE = Path(__file__).resolve().parent
BARE = TProtocol("/bench/bare-echo/1.0.0")
TINY_LIMITS = ReceiptLimits(fuel_max=10**8, memory_bytes_max=64 << 20, wall_time_s=5.0, output_bytes_max=1 << 20)
RTT_TARGET_S = 0.005
SEED_SYSTEM_RTT_S = 0.100
THROUGHPUT_TARGET = 1000.0
MATMUL_SIZE, MATMUL_BLOCK, MATMUL_CHUNKS_PER_TASK = 512, 64, 4


def fmt_ms(xs: list[float]) -> str:
    xs = sorted(xs)
    return (f"median {statistics.median(xs) * 1e3:.2f} ms (min {xs[0] * 1e3:.2f}, max {xs[-1] * 1e3:.2f}, "
            f"n={len(xs)})")


def met(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def load() -> str:
    """The 1-minute load average: other processes on this 2-core machine move every figure."""
    return f"load average {os.getloadavg()[0]:.1f}"


# --- peers ----------------------------------------------------------------------------------------------------


@asynccontextmanager
async def open_peers(base: Path, settings: list[dict[str, Any]]) -> AsyncIterator[list[Peer]]:
    """One peer per entry of ``settings`` (dotted keys), all bootstrapping from the first; every advert in every
    directory before it yields."""
    async with AsyncExitStack() as stack:
        peers: list[Peer] = []
        for i, extra in enumerate(settings):
            boot = [peers[0].addrs()[0]] if peers else None
            overrides = {k.replace(".", "__"): v for k, v in extra.items()}
            peers.append(await stack.enter_async_context(open_peer(local_config(base / f"p{i}", boot, **overrides))))
        ids = {p.peer_id for p in peers}
        await wait_for(lambda: all(set(p.directory.peers(time.time())) == ids for p in peers), 60)
        yield peers


def compute_of(peer: Peer) -> ComputeService:
    assert peer.compute is not None
    return peer.compute


def submit(peer: Peer, job_id: str, module_cid: str, chunk_cids: list[str], sizes: list[int], limits: ReceiptLimits,
           chunks_per_task: int = 1, verification: str = "hash") -> JobRun:
    spec = JobSpec(job_id=job_id, module_cid=module_cid, chunk_cids=tuple(chunk_cids), chunk_sizes=tuple(sizes),
                   limits=limits, chunks_per_task=chunks_per_task,
                   verification=VerificationPolicy.parse(verification), queue_timeout_s=600.0)
    return compute_of(peer).submit(spec)


def outputs(peer: Peer, run: JobRun) -> list[bytes]:
    out: list[bytes] = []
    for task_id in run.spec.task_ids():
        data = compute_of(peer).blocks.get(run.task(task_id).output_cid)
        assert data is not None
        out.extend(unframe_chunks(data))
    return out


async def finished(peer: Peer, run: JobRun, timeout_s: float) -> None:
    with trio.move_on_after(timeout_s):
        await compute_of(peer).watch(run.spec.job_id).done.wait()
    if run.state is not JobState.DONE:
        raise RuntimeError(f"job {run.spec.job_id} {run.state}: {run.reason} "
                           f"{dict(list(run.explain().items())[:3])}")


# --- 1. delegation round trip ---------------------------------------------------------------------------------


class Trace:
    """First time each phase was reached in one delegation (perf_counter), while ``active``."""

    def __init__(self) -> None:
        self.active = False
        self.t: dict[str, float] = {}

    def mark(self, name: str) -> None:
        if self.active and name not in self.t:
            self.t[name] = time.perf_counter()


PHASES = [
    ("submit", "A: submit() called (task refs, coordinator, placement)"),
    ("dispatch", "A: offer being sent (session stream)"),
    ("offer_sent", "A: offer encoded and written"),
    ("offer_at_b", "B: offer read and decoded"),
    ("serving", "B: admitted, input in hand, run requested"),
    ("sandbox_start", "B: module in hand, sandbox called"),
    ("sandbox_end", "B: sandbox result back (worker process round trip)"),
    ("signed", "B: receipt signed"),
    ("result_sent", "B: result written"),
    ("result_at_a", "A: result read and decoded"),
    ("verify_start", "A: result handed to the coordinator, output stored"),
    ("verified", "A: receipt tree verified, task accepted, job finished"),
    ("done", "caller: run.done seen"),
]


def instrument(trace: Trace, b_compute: ComputeService) -> Callable[[], None]:
    """Wrap the methods a delegation passes through with time stamps; returns the undo."""
    saved: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, new: Any) -> None:
        saved.append((owner, name, owner.__dict__.get(name, getattr(owner, name))))
        setattr(owner, name, new)

    orig_send_to_worker = ComputeService._send_to_worker
    orig_send = MessageStream.send
    orig_handle = ComputeService._handle
    orig_execute = ComputeService._execute
    orig_reply = ComputeService._reply
    orig_coord_result = coordinator_mod.Coordinator.on_result
    orig_issue = serving_mod.issue_receipt
    orig_run_chunks = b_compute.sandbox.run_chunks

    async def send_to_worker(self: ComputeService, act: SendToWorker) -> None:
        if act.dial:
            trace.mark("dispatch")
        await orig_send_to_worker(self, act)

    async def send(self: MessageStream, msg: codec.Message) -> None:
        await orig_send(self, msg)
        if isinstance(msg, codec.Offer):
            trace.mark("offer_sent")

    def handle(self: ComputeService, event: Any, now: float | None = None) -> None:
        if isinstance(event, FromIssuer) and isinstance(event.message, codec.Offer):
            trace.mark("offer_at_b")
        elif isinstance(event, FromWorker) and isinstance(event.message, codec.Result):
            trace.mark("result_at_a")
        orig_handle(self, event, now)

    async def execute(self: ComputeService, act: Any) -> Any:
        trace.mark("serving")
        return await orig_execute(self, act)

    async def run_chunks(*a: Any, **k: Any) -> Any:
        trace.mark("sandbox_start")
        out = await orig_run_chunks(*a, **k)
        trace.mark("sandbox_end")
        return out

    def issue(*a: Any, **k: Any) -> Any:
        out = orig_issue(*a, **k)
        trace.mark("signed")
        return out

    async def reply(self: ComputeService, act: Any) -> None:
        await orig_reply(self, act)
        if isinstance(act.message, codec.Result):
            trace.mark("result_sent")

    def coord_result(self: coordinator_mod.Coordinator, *a: Any, **k: Any) -> Any:
        trace.mark("verify_start")
        out = orig_coord_result(self, *a, **k)
        trace.mark("verified")
        return out

    patch(ComputeService, "_send_to_worker", send_to_worker)
    patch(MessageStream, "send", send)
    patch(ComputeService, "_handle", handle)
    patch(ComputeService, "_execute", execute)
    patch(ComputeService, "_reply", reply)
    patch(coordinator_mod.Coordinator, "on_result", coord_result)
    patch(serving_mod, "issue_receipt", issue)
    patch(b_compute.sandbox, "run_chunks", run_chunks)

    def undo() -> None:
        for owner, name, old in reversed(saved):
            if owner is b_compute.sandbox:
                delattr(owner, name)
            else:
                setattr(owner, name, old)

    return undo


async def delegation_round_trips(a: Peer, b: Peer, count: int, trace: Trace | None = None,
                                 traces: list[dict[str, float]] | None = None) -> list[float]:
    ca = compute_of(a)
    module = ca.blocks.put(load_guest("echo"), persist=True)
    samples = []
    for i in range(count):
        data = f"ping {i:08d}".encode()
        cid = ca.blocks.put(data, persist=True)
        if trace is not None:
            trace.t, trace.active = {}, True
        t0 = time.perf_counter()
        run = submit(a, f"rt{len(ca.jobs)}", module, [cid], [len(data)], TINY_LIMITS)
        if trace is not None:
            trace.mark("submit")
        await ca.watch(run.spec.job_id).done.wait()
        samples.append(time.perf_counter() - t0)
        if trace is not None:
            trace.mark("done")
            trace.active = False
            if traces is not None:
                traces.append({k: v - t0 for k, v in trace.t.items()})
        if run.state is not JobState.DONE or dict(run.workers) != {b.peer_id: 1}:
            raise RuntimeError(f"delegation {i}: {run.state}, workers {dict(run.workers)}")
        if outputs(a, run) != [data]:
            raise RuntimeError(f"delegation {i}: wrong output")
    return samples


async def bare_round_trips(a: Peer, b: Peer, count: int) -> list[float]:
    stream = await a.host.new_stream(ID.from_base58(b.peer_id), [BARE])
    samples = []
    for i in range(count):
        msg = f"ping {i:08d}".encode()
        t0 = time.perf_counter()
        await stream.write(msg)
        got = b""
        while len(got) < len(msg):
            got += await stream.read(len(msg) - len(got))
        samples.append(time.perf_counter() - t0)
        assert got == msg
    await stream.close()
    return samples


async def part_delegation(base: Path, count: int) -> None:
    print(f"\n== 1. delegation round trip: one tiny task A -> B (echo, 13 bytes, hash), warm, {count} runs each "
          f"({load()})")
    settings = [{"compute.memory_bytes_max": 16 << 20}, {}]  # A cannot take the task's 64 MiB: it delegates
    async with open_peers(base / "rt", settings) as (a, b):

        async def bare_echo(stream: Any) -> None:
            try:
                while data := await stream.read(64):
                    await stream.write(data)
            except Exception:
                pass

        b.host.set_stream_handler(BARE, bare_echo)
        await delegation_round_trips(a, b, 20)  # warm-up: B fetches the module, sandbox workers compile it
        await bare_round_trips(a, b, 20)
        pangea: list[float] = []
        bare: list[float] = []
        for _ in range(4):  # interleaved rounds: drift in machine load hits both alike
            pangea += await delegation_round_trips(a, b, count // 4)
            bare += await bare_round_trips(a, b, count // 4)
        p50, b50 = statistics.median(pangea), statistics.median(bare)
        print(f"  pangea job round trip (submit -> verified signed result): {fmt_ms(pangea)}")
        print(f"  bare py-libp2p stream round trip (write + read):          {fmt_ms(bare)}")
        print(f"  ratio pangea / bare (median): {p50 / b50:.1f}x")
        print(f"  target median < {RTT_TARGET_S * 1e3:.0f} ms: {met(p50 < RTT_TARGET_S)} "
              f"({p50 * 1e3:.2f} ms; the seed system's {SEED_SYSTEM_RTT_S * 1e3:.0f} ms is "
              f"{SEED_SYSTEM_RTT_S / p50:.0f}x this)")

        trace = Trace()
        undo = instrument(trace, compute_of(b))
        traces: list[dict[str, float]] = []
        try:
            await delegation_round_trips(a, b, max(50, count // 4), trace, traces)
        finally:
            undo()
        print(f"  where the time goes (instrumented pass, n={len(traces)}): median step from the previous phase, "
              "median time since submit")
        for key, label in PHASES:
            steps, since = [], []
            for t in traces:
                if key in t:
                    before = [t[k] for k, _ in PHASES[: [k for k, _ in PHASES].index(key)] if k in t]
                    steps.append(t[key] - max(before, default=0.0))
                    since.append(t[key])
            if steps:
                step, at = statistics.median(steps) * 1e3, statistics.median(since) * 1e3
                print(f"    {step:6.2f} ms  {at:6.2f} ms  {label}")


# --- 2. matrix product ----------------------------------------------------------------------------------------


def matmul_operands() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2026)  # the demo's seed
    return rng.standard_normal((MATMUL_SIZE, MATMUL_SIZE)), rng.standard_normal((MATMUL_SIZE, MATMUL_SIZE))


def matmul_limits() -> ReceiptLimits:
    lim = matmul_job(np.zeros((1, 1)), np.zeros((1, 1)), 1).limits
    return ReceiptLimits(lim.fuel_max, lim.memory_bytes_max, lim.wall_time_s, lim.output_bytes_max)


async def pangea_matmul(base: Path, n_peers: int, repeats: int) -> tuple[list[float], float, float, dict[str, int]]:
    """(wall seconds per run, main-process CPU / wall, max relative error, tasks per worker of the last run)."""
    a, b = matmul_operands()
    chunks = block_inputs(a, b, MATMUL_BLOCK)
    expected = a @ b
    settings = [{"capacity.task_slots": 1}] * n_peers  # as `pangea demo` runs its peers
    async with open_peers(base / f"mm{n_peers}", settings) as peers:
        first = peers[0]
        store = compute_of(first).blocks
        module = store.put(load_guest("matmul_block"), persist=True)
        cids = [store.put(c, persist=True) for c in chunks]
        sizes = [len(c) for c in chunks]
        times, cpu, err = [], 0.0, 0.0
        workers: dict[str, int] = {}
        for r in range(repeats + 1):  # run 0 warms up: module fetched and compiled everywhere
            c0, t0 = time.process_time(), time.perf_counter()
            run = submit(first, f"mm{r}", module, cids, sizes, matmul_limits(), MATMUL_CHUNKS_PER_TASK)
            await finished(first, run, 300)
            c = assemble(outputs(first, run), MATMUL_SIZE, MATMUL_SIZE, MATMUL_BLOCK)
            wall = time.perf_counter() - t0
            if r:
                times.append(wall)
                cpu += time.process_time() - c0
            err = float(np.max(np.abs(c - expected)) / np.max(np.abs(expected)))
            ids = {p.peer_id: f"peer{i}" for i, p in enumerate(peers)}
            workers = {ids[w]: n for w, n in sorted(run.workers.items(), key=lambda kv: ids[kv[0]])}
        return times, cpu / sum(times), err, workers


def numpy_one_core(repeats: int) -> tuple[float, str]:
    """Median seconds of ``a @ b`` with one BLAS thread (threadpoolctl if installed, else a subprocess), and how."""
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-not-found]
    except ImportError:
        code = (
            "import statistics, time, numpy as np\n"
            f"rng = np.random.default_rng(2026); a = rng.standard_normal(({MATMUL_SIZE}, {MATMUL_SIZE}))\n"
            f"b = rng.standard_normal(({MATMUL_SIZE}, {MATMUL_SIZE})); a @ b\n"
            f"ts = []\nfor _ in range({repeats}):\n"
            "    t0 = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t0)\n"
            "print(statistics.median(ts))\n"
        )
        one = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **one}, capture_output=True, text=True,
                             check=True)
        return float(out.stdout.strip()), "a subprocess with OPENBLAS_NUM_THREADS=1"
    a, b = matmul_operands()
    with threadpool_limits(1):
        a @ b
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts), "threadpoolctl"


def wasm_serial(chunks: list[bytes]) -> float:
    """Seconds for the 64 guest runs back to back in this process (one core, no network, no job layer)."""
    module = load_guest("matmul_block")
    cid = cid_of(module)
    limits = SandboxLimits(memory_bytes_max=64 << 20)
    with Executor(SandboxConfig(workers=1)) as ex:
        ex.run(cid, module, chunks[0], limits).unwrap()
        t0 = time.perf_counter()
        for c in chunks:
            ex.run(cid, module, c, limits).unwrap()
        return time.perf_counter() - t0


def numpy_block(chunk: bytes) -> bytes:
    """The matmul_block guest's contract (protocols/guest-abi.md) in numpy: the dask task of the numpy variant."""
    rows, k, cols, _ = struct.unpack_from("<IIII", chunk, 0)  # (a Struct object would not pickle)
    a = np.frombuffer(chunk, "<f8", rows * k, 16).reshape(rows, k)
    b = np.frombuffer(chunk, "<f8", k * cols, 16 + rows * k * 8).reshape(k, cols)
    return struct.pack("<IIII", rows, cols, 0, 0) + (a @ b).tobytes()


def wasm_block(chunk: bytes) -> bytes:
    """The same guest as the pangea job, in a dask worker (one Executor per worker process, kept on the worker)."""
    from distributed import get_worker

    from pangea_p2p.core.cid import cid_of
    from pangea_p2p.guests import load_guest
    from pangea_p2p.sandbox import Executor, SandboxConfig, SandboxLimits

    worker = get_worker()
    state = worker.__dict__.setdefault("_pangea_bench", {})
    if not state:
        module = load_guest("matmul_block")
        state.update(ex=Executor(SandboxConfig(workers=1)), module=module, cid=cid_of(module))
    out = state["ex"].run(state["cid"], state["module"], chunk, SandboxLimits(memory_bytes_max=64 << 20))
    return bytes(out.unwrap())


def dask_matmul(chunks: list[bytes], repeats: int) -> dict[str, list[float]] | str:
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        return f"dask.distributed is not importable ({exc}): skipped"
    for name in ("distributed", "tornado"):  # importing distributed set its loggers to INFO; a failure raises below
        logging.getLogger(name).setLevel(logging.CRITICAL)  # (and its shutdown races log harmless CommClosedErrors)
    a, b = matmul_operands()
    expected = a @ b
    out: dict[str, list[float]] = {}
    # Nanny sets OMP/MKL/OPENBLAS_NUM_THREADS=1 in its workers by default: one BLAS thread per worker.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        for name, kernel in (("numpy", numpy_block), ("wasm", wasm_block)):
            times = []
            for r in range(repeats + 1):  # run 0 warms up
                t0 = time.perf_counter()
                futures = [client.submit(kernel, c, pure=False) for c in chunks]
                c = assemble(client.gather(futures), MATMUL_SIZE, MATMUL_SIZE, MATMUL_BLOCK)
                if r:
                    times.append(time.perf_counter() - t0)
                err = float(np.max(np.abs(c - expected)) / np.max(np.abs(expected)))
                if err > 1e-12:
                    raise RuntimeError(f"dask {name}: relative error {err:.2e}")
            out[name] = times
    return out


async def part_matmul_pangea(base: Path, peer_counts: list[int], repeats: int) -> dict[int, Any]:
    return {n: await pangea_matmul(base, n, repeats) for n in peer_counts}


def part_matmul(base: Path, peer_counts: list[int], repeats: int) -> None:
    print(f"\n== 2. matrix product {MATMUL_SIZE}x{MATMUL_SIZE} float64, {MATMUL_BLOCK}x{MATMUL_BLOCK} blocks "
          f"({(MATMUL_SIZE // MATMUL_BLOCK) ** 2} guest runs, {MATMUL_CHUNKS_PER_TASK} per task), "
          f"median of {repeats} warm run(s) ({load()})")
    a, b = matmul_operands()
    chunks = block_inputs(a, b, MATMUL_BLOCK)
    np_s, how = numpy_one_core(20)
    serial_s = wasm_serial(chunks)
    pangea = trio.run(part_matmul_pangea, base, peer_counts, repeats)
    dask = dask_matmul(chunks, repeats)
    print(f"  numpy a @ b, one BLAS thread ({how}): {np_s * 1e3:.1f} ms")
    print(f"  the {len(chunks)} guest runs back to back, this process:     {serial_s * 1e3:8.1f} ms  "
          f"({serial_s / np_s:.0f}x numpy: the wasm kernel itself)")
    tasks = -(-len(chunks) // MATMUL_CHUNKS_PER_TASK)
    per_task_mib = sum(len(c) for c in chunks) / tasks / (1 << 20)
    print(f"  each of the {tasks} tasks carries {per_task_mib:.1f} MiB of input for "
          f"{serial_s / tasks * 1e3:.1f} ms of guest compute")
    one = statistics.median(pangea[peer_counts[0]][0]) if peer_counts else 0.0
    for n, (times, cpu, err, workers) in pangea.items():
        med = statistics.median(times)
        print(f"  pangea job, {n} peer(s), 1 slot each:                  {med * 1e3:8.1f} ms  "
              f"({med / np_s:.0f}x numpy, {med / serial_s:.2f}x the serial guest runs, speed-up over "
              f"{peer_counts[0]} peer(s) {one / med:.2f}x; main process CPU {cpu:.0%} of wall; max rel. error "
              f"{err:.1e}; tasks {workers})")
    if isinstance(dask, str):
        print(f"  dask.distributed: {dask}")
        return
    for name, times in dask.items():
        med = statistics.median(times)
        print(f"  dask LocalCluster (2 procs x 1 thread), {name:5s} kernel:  {med * 1e3:8.1f} ms  "
              f"({med / np_s:.0f}x numpy, {med / serial_s:.2f}x the serial guest runs)")
    if 2 in pangea and "wasm" in dask:
        ratio = statistics.median(pangea[2][0]) / statistics.median(dask["wasm"])
        print(f"  pangea on 2 peers / dask with the same wasm kernel on 2 workers: {ratio:.2f}x")


# --- 3. tiny-task throughput --------------------------------------------------------------------------------------


COST_CENTRES: list[tuple[str, tuple[str, ...]]] = [  # the first that matches "file:function" wins
    ("idle: waiting in epoll (network, sandbox workers)", ("epoll",)),
    ("sandbox round trip (pool, pipes, worker processes)", ("pangea_p2p/sandbox", "posix.write", "posix.read",
                                                            "posix.waitpid")),
    ("files: journal (sqlite), block files", ("io.open", "posix.", "_io.", "sqlite3", "pathlib")),
    ("compute behaviour, coordinator, scheduler (core/jobs, trust)",
     (*(f"core/jobs/{m}" for m in ("behaviour", "serving", "admission", "splitting", "coordinator", "placement",
                                    "votes", "verification", "strategies", "retries", "tasks", "scheduler",
                                    "model", "effects", "events")), "core/trust")),
    ("wire encode/decode (compute protobuf, framing)", ("core/jobs/codec", "net/framing", "google/protobuf",
                                                        "_pb2", "SerializeToString", "FromString")),
    ("receipts: sign, verify, tree codec, cids", ("core/verify", "nacl/", "_sodium", "crypto_sign", "core/cid",
                                                  "sha256", "multiformats")),
    ("compute driver (node/compute, blocks, journal)", ("node/compute", "node/blocks", "node/journal", "node/peer",
                                                        "node/state", "node/protocols", "core/capacity",
                                                        "core/chunks")),
    ("py-libp2p (yamux, noise, swarm, pubsub, kad)", ("libp2p/", "multiaddr", "cryptography")),
    ("trio scheduling and socket I/O", ("trio/", "outcome", "socket", "sniffio")),
]


def cost_centre(filename: str, func: str) -> str:
    where = f"{filename}:{func}"
    return next((n for n, keys in COST_CENTRES if any(k in where for k in keys)), "other")


def cost_centres(prof: cProfile.Profile) -> list[tuple[str, float]]:
    """Own time per cost centre; a builtin or stdlib function no centre claims (len, dict.get, dataclasses...)
    is charged to its callers' centres, in proportion to the time it spent for each."""
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    totals: dict[str, float] = {}
    for (filename, _line, func), (_cc, _nc, tt, _ct, callers) in stats.items():
        name = cost_centre(filename, func)
        if name == "other" and callers:
            for (cfile, _cline, cfunc), caller_stats in callers.items():
                cname = cost_centre(cfile, cfunc)
                totals[cname] = totals.get(cname, 0.0) + caller_stats[2]
            continue
        totals[name] = totals.get(name, 0.0) + tt
    return sorted(totals.items(), key=lambda kv: -kv[1])


async def throughput_run(first: Peer, names: dict[str, str], n: int, job_id: str, limits: ReceiptLimits,
                         prof: cProfile.Profile | None = None) -> tuple[float, float, dict[str, int]]:
    """Submit the job at ``first``; (tasks/s, this process's CPU / wall, tasks per worker by ``names``)."""
    store = compute_of(first).blocks
    module = store.put(load_guest("echo"), persist=True)
    chunks = [f"{job_id} task {i}".encode() for i in range(n)]
    cids = [store.put(c, persist=True) for c in chunks]
    c0, t0 = time.process_time(), time.perf_counter()
    if prof is not None:
        prof.enable()
    run = submit(first, job_id, module, cids, [len(c) for c in chunks], limits)
    await finished(first, run, 600)
    if prof is not None:
        prof.disable()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    if outputs(first, run) != chunks:
        raise RuntimeError(f"{job_id}: wrong outputs")
    return n / wall, cpu / wall, {names[w]: k for w, k in sorted(run.workers.items(), key=lambda kv: names[kv[0]])}


def print_profile(n: int, profiles: list[tuple[float, dict[str, float]]]) -> None:
    (rate_a, a), (rate_b, b) = profiles
    print(f"  profile of this process over two more runs of {n} tasks under cProfile ({rate_a:,.0f} and "
          f"{rate_b:,.0f} tasks/s): own time per task and cost centre (a syscall's time includes any time the "
          "process lost the CPU in it)")
    print("    as placed   delegated")
    for name in sorted(a, key=lambda k: -a[k]):
        print(f"    {a[name] / n * 1e6:6.0f} us  {b.get(name, 0.0) / n * 1e6:6.0f} us   {name}")
    print(f"    {sum(a.values()) / n * 1e6:6.0f} us  {sum(b.values()) / n * 1e6:6.0f} us   in all")


async def profiled(first: Peer, names: dict[str, str], n: int, prefix: str, local_ok: ReceiptLimits) -> None:
    profiles = []
    for job_id, limits in ((f"{prefix}prof", local_ok), (f"{prefix}profremote", TINY_LIMITS)):
        prof = cProfile.Profile()
        prof_rate, _, _ = await throughput_run(first, names, n, job_id, limits, prof)
        profiles.append((prof_rate, dict(cost_centres(prof))))
    print_profile(n, profiles)


# peer0 runs tasks of up to 16 MiB: with limits of 16 MiB the scheduler may keep tasks there (its choice, the
# headline figure); with 64 MiB every task must cross the network to peers 1-3.
LOCAL_OK = replace(TINY_LIMITS, memory_bytes_max=16 << 20)
SUBMITTER = {"compute.memory_bytes_max": 16 << 20}


async def part_throughput(base: Path, n: int) -> None:
    print(f"\n== 3a. tiny-task throughput: one job of {n} one-chunk echo tasks (hash) on 4 peers, all in this one "
          f"process ({load()})")
    async with open_peers(base / "tp", [SUBMITTER, {}, {}, {}]) as peers:
        names = {p.peer_id: f"peer{i}" for i, p in enumerate(peers)}
        first = peers[0]
        await throughput_run(first, names, 100, "warm", LOCAL_OK)  # modules fetched and compiled on every peer
        await throughput_run(first, names, 100, "warm2", TINY_LIMITS)
        rate, cpu, workers = await throughput_run(first, names, n, "tp", LOCAL_OK)
        print(f"  {rate:,.0f} tasks/s, submitter may run tasks (main process CPU {cpu:.0%} of wall; tasks per "
              f"peer {workers})")
        print(f"  target >= {THROUGHPUT_TARGET:,.0f} tasks/s on 2 cores: {met(rate >= THROUGHPUT_TARGET)}")
        remote, cpu, workers = await throughput_run(first, names, n, "tpremote", TINY_LIMITS)
        print(f"  {remote:,.0f} tasks/s, every task delegated (main process CPU {cpu:.0%} of wall; tasks per "
              f"peer {workers})")
        await profiled(first, names, n, "tp", LOCAL_OK)


async def part_throughput_procs(base: Path, n: int, workers_n: int = 3) -> None:
    print(f"\n== 3b. the same job, each peer in its own OS process: the submitter in this one, {workers_n} workers "
          f"in benchmarks/netcluster.py processes ({load()})")
    from bench_network import Worker  # the stdin/stdout client of a netcluster process

    async with open_peers(base / "tpm", [SUBMITTER]) as (first,):
        procs: list[Worker] = []
        try:
            for i in range(workers_n):
                cmd = [sys.executable, str(HERE / "netcluster.py"), "--base",
                       str(base / f"tpm-w{i}"), "--peers", "1", "--bootstrap", first.addrs()[0]]
                proc = await trio.lowlevel.open_process(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                procs.append(Worker(proc))
                assert (await procs[-1].line()).startswith("READY")
            names = {first.peer_id: "peer0"}
            for i, w in enumerate(procs):
                await w.send("IDS")
                names[(await w.line()).split()[1]] = f"peer{i + 1}"
            await wait_for(lambda: set(first.directory.peers(time.time())) == set(names), 60)
            with trio.fail_after(60):
                while True:
                    counts = []
                    for w in procs:
                        await w.send("COUNT")
                        counts.append(int((await w.line()).split()[1]))
                    if min(counts) >= len(names):
                        break
                    await trio.sleep(0.2)

            async def worker_cpu() -> list[float]:
                out = []
                for w in procs:
                    await w.send("CPU")
                    out.append(float((await w.line()).split()[1]))
                return out

            async def measured(job_id: str, limits: ReceiptLimits, what: str) -> float:
                before, t0 = await worker_cpu(), time.perf_counter()
                rate, cpu, workers = await throughput_run(first, names, n, job_id, limits)
                wall = time.perf_counter() - t0
                used = [(b - a) / wall for a, b in zip(before, await worker_cpu(), strict=True)]
                print(f"  {rate:,.0f} tasks/s, {what} (submitter process CPU {cpu:.0%} of wall, worker processes "
                      f"{', '.join(f'{u:.0%}' for u in used)}; tasks per peer {workers})")
                return rate

            await throughput_run(first, names, 100, "warm", LOCAL_OK)
            await throughput_run(first, names, 100, "warm2", TINY_LIMITS)
            rate = await measured("tp", LOCAL_OK, "submitter may run tasks")
            print(f"  target >= {THROUGHPUT_TARGET:,.0f} tasks/s on 2 cores: {met(rate >= THROUGHPUT_TARGET)}")
            await measured("tpremote", TINY_LIMITS, "every task delegated")
            await profiled(first, names, n, "tpm", LOCAL_OK)
        finally:
            for w in procs:
                with trio.move_on_after(10):
                    await w.send("QUIT")
                    await w.proc.wait()
                if w.proc.returncode is None:
                    w.proc.kill()


# --- 4. verify_job against the job ------------------------------------------------------------------------------

VERIFY_TARGET = 0.20


def verify_per_request(client: Any, job_id: str, chunk_cids: list[str]) -> tuple[Any, int]:
    """The old path of verify_job: the result document, then every output and every input chunk by its own
    request, checked as verify_job checks them; the report and the number of requests."""
    from pangea_p2p.core.chunks import frame_chunks
    from pangea_p2p.core.jobs.evidence import TaskEvidence
    from pangea_p2p.core.verify.config import VerifyConfig
    from pangea_p2p.sdk.verify import JobVerification, verify_task

    doc = client.job_result(job_id)
    report = JobVerification(job_id, str(doc["issuer"]), str(doc["verification"]))
    requests, config = 1, VerifyConfig()
    for i, fields in enumerate(doc["tasks"]):
        report.tasks += 1
        framed_input = frame_chunks([client.block(c) for c in fields["chunk_cids"]])
        output = client.block(doc["outputs"][i])
        requests += len(fields["chunk_cids"]) + 1
        fields = {**fields, "worker": doc["workers"][i], "output_cid": doc["outputs"][i]}
        verify_task(report, doc, TaskEvidence(fields, bytes.fromhex(doc["receipts"][i]), output, framed_input),
                    config, check_inputs=True)
    assert [c for t in doc["tasks"] for c in t["chunk_cids"]] == chunk_cids
    return report, requests


async def part_verify(base: Path, lines: int) -> None:
    from pangea_p2p.sdk import Client, Job
    from pangea_p2p.sdk.verify import verify_job

    print(f"\n== 4. verify_job against the job's own time: {lines:,} one-line chunks, 8 a task, 2 peers ({load()})")
    text = b"".join(b"line %d of the corpus, with a few words to count\n" % i for i in range(lines))
    job: Job[list[bytes]] = Job("lines", guest="wordcount_map", chunks_per_task=8, verification="hash")
    job.split(lambda data: data.splitlines(keepends=True))
    job.merge(lambda outputs: outputs)
    async with open_peers(base / "verify", [{}, {}]) as (first, _):
        client = Client(f"127.0.0.1:{first.api_port}", timeout_s=120)
        try:
            def run_job() -> tuple[Any, float]:
                t0 = time.perf_counter()
                handle = job.submit(text, client)
                assert handle.wait(timeout_s=600)["state"] == "done"
                return handle, time.perf_counter() - t0

            await trio.to_thread.run_sync(job.run_local, text[:2000])  # warm the guest
            handle, job_s = await trio.to_thread.run_sync(run_job)
            chunks = len(handle.chunk_cids or [])

            def new_path() -> tuple[Any, float]:
                t0 = time.perf_counter()
                report = verify_job(client, handle.job_id, module_cid=handle.module_cid, chunk_cids=handle.chunk_cids)
                return report, time.perf_counter() - t0

            def old_path() -> tuple[Any, int, float]:
                t0 = time.perf_counter()
                report, requests = verify_per_request(client, handle.job_id, list(handle.chunk_cids or []))
                return report, requests, time.perf_counter() - t0

            new, new_s = await trio.to_thread.run_sync(new_path)
            old, requests, old_s = await trio.to_thread.run_sync(old_path)
        finally:
            client.close()
    assert new.ok, new.summary()
    assert old.ok, old.summary()
    assert new.receipts == old.receipts
    tasks = new.tasks
    print(f"  job: {chunks:,} chunks in {tasks:,} tasks, {job_s:.2f} s from upload to done")
    print(f"  verify_job, evidence pages (new):             {new_s:.3f} s = {new_s / job_s:.1%} of the job "
          f"({new.receipts:,} receipts, every input chunk and output checked)")
    print(f"  the same checks, one request per block (old): {old_s:.3f} s = {old_s / job_s:.1%} of the job "
          f"({requests:,} requests)")
    print(f"  new path {old_s / new_s:.1f}x faster; target <= {VERIFY_TARGET:.0%} of the job's time: "
          f"{met(new_s <= VERIFY_TARGET * job_s)}")


# --- main -------------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (under ~2 minutes)")
    parser.add_argument("--parts", default="1,2,3,4", help="which parts to run, e.g. 1,3")
    args = parser.parse_args()
    parts = {int(p) for p in args.parts.split(",")}
    print(f"bench_jobs{' --quick' if args.quick else ''}: {os.cpu_count()} cores, Python "
          f"{sys.version.split()[0]}, every peer on 127.0.0.1")
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        base = Path(tmp)
        if 1 in parts:
            trio.run(part_delegation, base, 200 if args.quick else 1000)
        if 2 in parts:
            part_matmul(base, [1, 2, 4], 1 if args.quick else 3)
        if 3 in parts:
            trio.run(part_throughput, base, 1000 if args.quick else 2000)
            trio.run(part_throughput_procs, base, 1000 if args.quick else 2000)
        if 4 in parts:
            trio.run(part_verify, base, 8000 if args.quick else 40000)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
