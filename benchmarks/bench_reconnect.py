"""How long a restarted peer takes to be back with its neighbours (issue 13). Prints figures; not a test.

Three real ``pangea node`` processes on 127.0.0.1 with the default settings (advert every 10 s, bootstrap
backoff from 1 s), as the README starts them: A on a fixed port, B and C bootstrapping from A. Then, ``--rounds``
times each:

1. ``kill -9`` A (the bootstrap peer, started without --bootstrap) and start it again on the same data dir and
   port: it dials the peers of its DATA_DIR/peers.json;
2. the same, with A's peers.json removed before the restart: only B and C redialing their bootstrap peer
   bring it back (the baseline for 1);
3. ``kill -9`` B and start it again on the same data dir (its listen port is a new one).

Before issue 13 (no peers.json, no redial of a lost bootstrap peer, py-libp2p's 60 s negative dial cache in
the way) the same run printed: A back in median 60.26 s (n=2), B in 2.16 s.

Measured from the restart command to the moment the restarted peer is connected to both others, lists both
others' adverts, and both others list an advert it issued after its restart (what a job placed there needs);
"from start" subtracts the time the process took to come up (its "api on" line: importing py-libp2p, measuring
the sandbox's speed). Each wait is bounded (``--timeout-s``): a round that does not finish prints "timed out".

    .venv/bin/python benchmarks/bench_reconnect.py [--rounds 3] [--timeout-s 150]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

PANGEA = [sys.executable, "-m", "pangea_p2p", "node"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    """A ``pangea node`` process; its stdout lines collected as they arrive."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.data_dir, self.args = data_dir, args
        self.started_at = time.monotonic()
        env = {k: v for k, v in os.environ.items() if k != "PANGEA_DATA_DIR"}
        self.proc = subprocess.Popen([*PANGEA, "--data-dir", str(data_dir), *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env)
        self.lines: list[str] = []
        self.up = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())
            if line.startswith("api on "):
                self.up_at = time.monotonic()
                self.up.set()

    def wait_up(self, timeout_s: float) -> None:
        if not self.up.wait(timeout_s):
            raise SystemExit(f"peer on {self.data_dir} did not start within {timeout_s}s")

    @property
    def api(self) -> str:
        return next(x for x in self.lines if x.startswith("api on ")).removeprefix("api on ")

    @property
    def addr(self) -> str:
        return next(x for x in self.lines if x.startswith("listening on /ip4/127.0.0.1/")).removeprefix(
            "listening on ")

    @property
    def peer_id(self) -> str:
        return self.addr.rsplit("/p2p/", 1)[1]

    def get(self, path: str) -> dict[str, object]:
        try:
            doc: dict[str, object] = httpx.get(self.api + path, timeout=5, trust_env=False).json()
            return doc
        except httpx.HTTPError:
            return {}

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def restart(self) -> Node:
        return Node(self.data_dir, *self.args)


def back(node: Node, others: list[Node], since: float) -> bool:
    """``node`` connected to every other, lists their adverts, and every other lists its new advert."""
    peers = node.get("/v1/peers").get("peers", [])
    connected = {p["peer_id"] for p in peers if p["connected"]}  # type: ignore[index, union-attr]
    if not {o.peer_id for o in others} <= connected:
        return False
    adverts = {a["peer_id"] for a in node.get("/v1/capacity").get("adverts", [])}  # type: ignore[index, union-attr]
    if not {o.peer_id for o in others} <= adverts:
        return False
    for other in others:
        theirs = {a["peer_id"]: a for a in other.get("/v1/capacity").get("adverts", [])}  # type: ignore[index, union-attr]
        if node.peer_id not in theirs or float(theirs[node.peer_id]["issued_at"]) < since:
            return False
    return True


def wait_back(node: Node, others: list[Node], since_wall: float, timeout_s: float) -> float | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if back(node, others, since_wall):
            return time.monotonic()
        time.sleep(0.05)  # polling other processes' HTTP APIs
    return None


def fmt(xs: list[float]) -> str:
    if not xs:
        return "none finished"
    return f"median {statistics.median(xs):.2f} s (min {min(xs):.2f}, max {max(xs):.2f}, n={len(xs)})"


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-reconnect-") as tmp:
        base = Path(tmp)
        port = free_port()
        a = Node(base / "a", "--listen", f"/ip4/127.0.0.1/tcp/{port}", "--api-port", "0")
        a.wait_up(60)
        b = Node(base / "b", "--listen", "/ip4/127.0.0.1/tcp/0", "--api-port", "0", "--bootstrap", a.addr)
        c = Node(base / "c", "--listen", "/ip4/127.0.0.1/tcp/0", "--api-port", "0", "--bootstrap", a.addr)
        nodes = {"A": a, "B": b, "C": c}
        try:
            for n in (b, c):
                n.wait_up(60)
            for name, node in nodes.items():
                others = [o for o in nodes.values() if o is not node]
                if wait_back(node, others, 0.0, args.timeout_s) is None:
                    raise SystemExit(f"the first network never formed ({name})")
            for name, forget in (("A", False), ("A", True), ("B", False)):
                total, from_up = [], []
                for _ in range(args.rounds):
                    nodes[name].kill()
                    if forget:
                        (nodes[name].data_dir / "peers.json").unlink(missing_ok=True)
                    t0, wall0 = time.monotonic(), time.time()
                    node = nodes[name] = nodes[name].restart()
                    node.wait_up(60)
                    others = [o for o in nodes.values() if o is not node]
                    done = wait_back(node, others, wall0, args.timeout_s)
                    if done is None:
                        print(f"restart of {name}: timed out after {args.timeout_s}s", flush=True)
                        continue
                    total.append(done - t0)
                    from_up.append(done - node.up_at)
                    print(f"restart of {name}: back in {done - t0:.2f} s ({done - node.up_at:.2f} s from start)",
                          flush=True)
                role = "the bootstrap peer" if name == "A" else "a peer that bootstraps from A"
                role += ", its peers.json removed" if forget else ""
                print(f"== {name} ({role}) kill -9 + restart, back with its neighbours: {fmt(total)}; "
                      f"from its start: {fmt(from_up)}", flush=True)
        finally:
            for n in nodes.values():
                if n.proc.poll() is None:
                    n.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="restarts of each peer (default 3)")
    parser.add_argument("--timeout-s", type=float, default=150.0, help="give up on a round after this (default 150)")
    main(parser.parse_args())
