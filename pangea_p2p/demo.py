"""`pangea demo` (what `make demo` runs): a matrix product on a small network of real peers on 127.0.0.1.

Starts ``peers`` `pangea node` processes (the first is the bootstrap of the others), waits until they see
each other's capacity adverts, submits ``C = A @ B`` for two random ``size x size`` float64 matrices split into
``block x block`` output blocks to the first peer through the SDK, and prints a short report: which peers ran
how many tasks, fuel, time, the verification outcome (receipts verified offline, spot checks), and the
difference from numpy.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from pangea_p2p.errors import PangeaError
from pangea_p2p.sdk.client import Client
from pangea_p2p.sdk.matmul import matmul_job

START_TIMEOUT_S = 120.0
TOLERANCE = 1e-12


class DemoPeer:
    def __init__(self, data_dir: Path, bootstrap: str | None) -> None:
        cmd = [sys.executable, "-m", "pangea_p2p", "node", "--data-dir", str(data_dir), "--listen",
               "/ip4/127.0.0.1/tcp/0", "--api-port", "0", "--log-level", "warning",
               "--set", "capacity.task_slots=1", "--set", "capacity.advert_interval_s=2"]
        if bootstrap:
            cmd += ["--bootstrap", bootstrap]
        self.data_dir = data_dir
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())
            if line.startswith("api on "):
                self.ready.set()
        self.ready.set()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if " error " in line or "Traceback" in line:
                print(f"  [{self.data_dir.name}] {line.rstrip()}", file=sys.stderr)

    def address(self) -> str:
        if not self.ready.wait(START_TIMEOUT_S) or self.proc.poll() is not None:
            raise PangeaError(f"peer in {self.data_dir} did not start")
        return next(x.removeprefix("listening on ") for x in self.lines if x.startswith("listening on "))

    def api(self) -> str:
        self.address()
        return next(x.removeprefix("api on http://") for x in self.lines if x.startswith("api on "))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _wait_for_network(client: Client, peers: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while len(client.capacity()["adverts"]) < peers:
        if time.monotonic() > deadline:
            raise PangeaError(f"the {peers} peers did not find each other within {START_TIMEOUT_S:g} s")
        time.sleep(0.2)  # polling another process's API


def run_demo(peers: int = 4, size: int = 512, block: int = 64, verification: str = "spot:1") -> int:
    print(f"pangea demo: {peers} peers on 127.0.0.1, C = A @ B for {size}x{size} float64 in {block}x{block} blocks")
    with tempfile.TemporaryDirectory(prefix="pangea-demo-") as tmp:
        nodes: list[DemoPeer] = []
        try:
            nodes.append(DemoPeer(Path(tmp) / "peer0", None))
            boot = nodes[0].address()
            nodes += [DemoPeer(Path(tmp) / f"peer{i}", boot) for i in range(1, peers)]
            for node in nodes:
                node.address()
            nodes[0].api()  # up and serving: its API address and token are in its data dir
            with Client.for_data_dir(nodes[0].data_dir, timeout_s=120) as client:
                _wait_for_network(client, peers)
                print(f"network up: {peers} peers see each other's capacity adverts")
                return _run_job(client, size, block, verification)
        finally:
            for node in nodes:
                node.stop()


def _run_job(client: Client, size: int, block: int, verification: str) -> int:
    rng = np.random.default_rng(2026)
    a, b = rng.standard_normal((size, size)), rng.standard_normal((size, size))
    job = matmul_job(a, b, block, verification=verification, chunks_per_task=4)
    start = time.perf_counter()
    handle = job.submit(None, client)
    status = handle.wait()
    elapsed = time.perf_counter() - start
    if status["state"] != "done":
        print(f"job {handle.job_id} {status['state']}: {status['reason']}")
        for task, info in handle.explain()["tasks"].items():
            print(f"  {task}: {info['state']}: {' | '.join(info['reasons'][-3:])}")
        return 1
    c = job._parts()[1](handle.outputs())
    t0 = time.perf_counter()
    expected = a @ b
    numpy_s = time.perf_counter() - t0
    error = float(np.max(np.abs(c - expected)) / np.max(np.abs(expected)))
    report = handle.verify()
    _print_report(status, elapsed, numpy_s, error, report)
    return 0 if error <= TOLERANCE and report.ok else 1


def _print_report(status: dict[str, Any], elapsed: float, numpy_s: float, error: float, report: Any) -> None:
    me = report.issuer
    print(f"job {status['job_id']} done in {elapsed:.2f} s ({status['tasks_total']} tasks, "
          f"{status['fuel_used']:.3g} fuel; numpy alone: {numpy_s * 1000:.1f} ms)")
    for worker, n in sorted(status["workers"].items(), key=lambda kv: -kv[1]):
        print(f"  {worker[-12:]}{' (submitter)' if worker == me else ''}: {n} task(s)")
    print(f"verification ({status['verification']}): {report.summary()}")
    print(f"max |C - numpy| / max |numpy| = {error:.2e} (tolerance {TOLERANCE:g}): "
          f"{'OK' if error <= TOLERANCE else 'MISMATCH'}")
