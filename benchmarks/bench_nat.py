"""Peers behind NAT (issue 14): task round trip to a worker reached directly, through a relay, and over a
hole-punched connection, in the same run; and the time from a home peer's start to its first accepted task.
Prints figures; not a test.

The network is built in namespaces this script creates and removes (pangea_p2p/netlab.py: a public network,
home networks behind nftables masquerade routers), so it needs root, ``ip`` and ``nft``; without them it says
why and exits. Every peer is a ``pangea node`` process; the script drives them over their HTTP APIs.

- the issuer h2 (home) submits one-task jobs (the sha256 guest on 64 bytes, hash-verified) and cannot run them
  itself (its fuel limit is below the task's); the relay r0 cannot either;
- *time to first task*: a job is waiting at h2 when the home worker h1 starts; the figure is h1's process start
  to the job's result accepted (process start, speed measurement, AutoNAT, relay reservation, advert, relayed
  dial, the task);
- *round trip*: one-task jobs in sequence, submit to accepted result, to h1 (home, no DCUtR: relayed), then
  h3 (home, DCUtR: hole-punched, measured once the link reports so), then p (public: direct); only one of them
  runs at a time.

    sudo .venv/bin/python benchmarks/bench_nat.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from pangea_p2p import netlab
from pangea_p2p.sdk.client import Client
from pangea_p2p.sdk.job import Job, Limits

PANGEA = [sys.executable, "-m", "pangea_p2p"]
FAST = ["--set", "capacity.advert_interval_s=1", "--set", "dht.bootstrap_retry_s_min=0.2",
        "--set", "coordinator.unreachable_cooldown_s=2"]
NOT_A_WORKER = ["--set", "compute.fuel_max=1000"]  # below the job's fuel: takes no task
START_TIMEOUT_S = 120.0


class Node:
    """A ``pangea node`` process in a namespace; its printed addresses and its API address on the mgmt link."""

    def __init__(self, lab: netlab.NatLab, ns: str, data_dir: Path, listen: list[str], *args: str) -> None:
        self.started_at = time.time()
        cmd = [*lab.prefix(ns), *PANGEA, "node", "--data-dir", str(data_dir), "--api-port", "0",
               "--set", f"api.host={lab.mgmt_ip(ns)}", "--set", "api.allow_remote=true", *FAST, *args]
        for addr in listen:
            cmd += ["--listen", addr]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.log: list[str] = []
        self._ready = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_log, daemon=True).start()
        if not self._ready.wait(START_TIMEOUT_S):
            self.stop()
            raise SystemExit(f"{ns}: the peer did not start within {START_TIMEOUT_S:g} s")
        self.addrs = [x.removeprefix("listening on ") for x in self.lines if x.startswith("listening on ")]
        self.peer_id = self.addrs[0].rsplit("/p2p/", 1)[1]
        port = next(x for x in self.lines if x.startswith("api on ")).rsplit(":", 1)[1]
        self.api = f"{lab.mgmt_ip(ns)}:{port}"

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("api on "):
                self._ready.set()

    def _pump_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))

    def event_at(self, event: str, *contains: str) -> float | None:
        """Seconds from the process start to the first log line of ``event`` (containing ``contains``)."""
        for line in self.log:
            stamp, _, rest = line.partition(" ")
            if f" {event}" in f" {rest}" and all(c in rest for c in contains):
                try:
                    return datetime.fromisoformat(stamp).timestamp() - self.started_at
                except ValueError:
                    continue
        return None

    def get(self, what: str) -> Any:
        with Client(self.api, timeout_s=30) as client:
            return getattr(client, what)()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def poll(what: str, check: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling other processes' HTTP APIs


def one_task_job(i: int) -> Job[list[bytes]]:
    job: Job[list[bytes]] = Job("rt", guest="sha256", verification="hash", limits=Limits(fuel_max=10**9))
    job.split(lambda seed: [seed.to_bytes(8, "big") * 8])
    job.merge(lambda outputs: outputs)
    return job


def run_job(issuer: Node, i: int, timeout_s: float = 120.0) -> float:
    """Submit a one-task job at ``issuer`` and wait for its accepted result; the seconds it took."""
    with Client(issuer.api, timeout_s=60) as client:
        start = time.perf_counter()
        handle = one_task_job(i).submit(i, client)
        status = handle.wait(timeout_s=timeout_s)
        took = time.perf_counter() - start
    if status["state"] != "done":
        raise SystemExit(f"job {i} ended {status['state']}: {status.get('reason')}")
    return took


def link(issuer: Node, worker: Node) -> str:
    return str(issuer.get("health")["nat"]["links"].get(worker.peer_id, "none"))


def fmt(xs: list[float]) -> str:
    xs = sorted(xs)
    return (f"median {statistics.median(xs) * 1000:.1f} ms (p10 {xs[len(xs) // 10] * 1000:.1f}, "
            f"max {xs[-1] * 1000:.1f}, n={len(xs)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    why_not = netlab.unavailable()
    if why_not:
        print(f"bench_nat: skipped: {why_not}")
        return
    with tempfile.TemporaryDirectory(prefix="bench-nat-") as tmp, netlab.NatLab(homes=3) as lab:
        base = Path(tmp)
        nodes: list[Node] = []
        try:

            def start(ns: str, name: str, listen: list[str], *extra: str) -> Node:
                nodes.append(Node(lab, ns, base / name, listen, *extra))
                return nodes[-1]

            pub = [f"/ip4/{lab.pub_ip(n)}/tcp/4001" for n in (1, 2, 3)]
            relay = start(lab.pub, "r0", pub, *NOT_A_WORKER)
            boot = {n: next(a for a in relay.addrs if f"/{lab.pub_ip(n)}/" in a) for n in (1, 2, 3)}

            def home(n: int, *extra: str) -> Node:
                return start(lab.home(n), f"h{n}", [f"/ip4/{lab.home_ip(n)}/tcp/4001"], "--bootstrap", boot[n],
                             *extra)

            issuer = home(2, *NOT_A_WORKER)
            poll("the issuer's relay reservation", lambda: issuer.get("health")["nat"]["relays"], 60)

            # time to first task: a job is waiting when the home worker starts
            with Client(issuer.api, timeout_s=60) as client:
                waiting = one_task_job(0).submit(0, client)
                h1 = home(1, "--set", "nat.hole_punching=false")
                status = waiting.wait(timeout_s=180)
                first = time.time() - h1.started_at
            if status["state"] != "done":
                raise SystemExit(f"the first job ended {status['state']}")
            print(f"home peer start -> first accepted task (relayed): {first:.2f} s")
            steps = [("peer started", h1.event_at("peer.started")),
                     ("bootstrap connected", h1.event_at("bootstrap.connected")),
                     ("found private", h1.event_at("nat.changed", "reachability=private")),
                     ("relay reserved", h1.event_at("nat.changed", "relays=['"))]
            print("  of which (seconds after the process start): "
                  + ", ".join(f"{name} {at:.2f}" for name, at in steps if at is not None))

            results: dict[str, list[float]] = {}
            relayed = [run_job(issuer, i) for i in range(1, args.rounds + 1)]
            assert link(issuer, h1) == "relayed", link(issuer, h1)
            results["relayed"] = relayed
            h1.stop()

            h3 = home(3)
            run_job(issuer, 1000)  # opens the relayed connection that DCUtR upgrades
            poll("the hole punch", lambda: link(issuer, h3) == "hole-punched", 60)
            results["hole-punched"] = [run_job(issuer, 1000 + i) for i in range(1, args.rounds + 1)]
            h3.stop()

            direct = start(lab.pub, "p", [a.replace("4001", "4002") for a in pub], "--bootstrap", boot[1])
            run_job(issuer, 2000)
            assert link(issuer, direct) == "direct", link(issuer, direct)
            results["direct"] = [run_job(issuer, 2000 + i) for i in range(1, args.rounds + 1)]

            print("one-task job round trip (submit -> accepted result), by how the issuer reaches the worker:")
            base_median = statistics.median(results["direct"])
            for name in ("direct", "relayed", "hole-punched"):
                ratio = statistics.median(results[name]) / base_median
                print(f"  {name:13s} {fmt(results[name])}  ratio to direct {ratio:.2f}")
        finally:  # before the namespaces and the data directories go
            for node in nodes:
                node.stop()


if __name__ == "__main__":
    main()
