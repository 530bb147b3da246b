"""End to end, real ``pangea node`` processes on 127.0.0.1: a peer killed with ``kill -9`` and started again on
the same data dir is back with its neighbours within seconds (connected, their adverts seen, its new advert in
their directories), its neighbours log the disconnect and the reconnect, and their health says "degraded" while
it is down. benchmarks/bench_reconnect.py prints the times (about a minute before the fix)."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pangea_p2p.sdk.client import Client
from tests.e2e.nodeproc import NodeProcess

pytestmark = pytest.mark.slow
BACK_WITHIN_S = 20.0  # from the restarted process's "api on" line; ~2 s measured, the machine is shared


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client(node: NodeProcess) -> Client:
    node.addrs()
    api = next(x for x in node.stdout if x.startswith("api on "))
    return Client(api.removeprefix("api on http://"), timeout_s=10)


def wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out ({timeout_s}s) waiting for {what}"
        time.sleep(0.05)  # polling other processes' HTTP APIs


def back(node: Client, others: list[Client], since: float) -> bool:
    """``node`` is connected to every other, lists their adverts, and each lists an advert it issued after
    ``since`` (wall clock)."""
    me = node.id()["peer_id"]
    ids = {o.id()["peer_id"] for o in others}
    connected = {p["peer_id"] for p in node.peers()["peers"] if p["connected"]}
    if not ids <= connected or not ids <= {a["peer_id"] for a in node.capacity()["adverts"]}:
        return False
    for other in others:
        theirs = {a["peer_id"]: a for a in other.capacity()["adverts"]}
        if me not in theirs or theirs[me]["issued_at"] < since:
            return False
    return True


def health(c: Client) -> dict[str, Any]:
    doc: dict[str, Any] = c.health()
    return doc


@pytest.mark.parametrize("forget_known_peers", [False, True], ids=["known-peers", "bootstrap-redial-only"])
def test_a_killed_bootstrap_peer_is_back_with_its_neighbours_in_seconds(
    tmp_path: Path, forget_known_peers: bool
) -> None:
    port = free_port()
    local = ["--listen", "/ip4/127.0.0.1/tcp/0", "--api-port", "0"]
    a = NodeProcess(tmp_path / "a", "--listen", f"/ip4/127.0.0.1/tcp/{port}", "--api-port", "0")
    nodes = [a]
    try:
        boot = a.addrs()[0]
        b = NodeProcess(tmp_path / "b", *local, "--bootstrap", boot)
        c = NodeProcess(tmp_path / "c", *local, "--bootstrap", boot)
        nodes += [b, c]
        ca, cb, cc = client(a), client(b), client(c)
        a_id = ca.id()["peer_id"]
        wait(lambda: back(ca, [cb, cc], 0.0), 90, "the first network")
        assert health(cb)["status"] == "ok"
        wait(lambda: (a.data_dir / "peers.json").exists(), 10, "A's known peers on disk")

        a.stop(signal.SIGKILL)
        # B's health tells the truth: its bootstrap peer is gone
        wait(lambda: health(cb)["bootstrap"][boot]["status"] in {"disconnected", "retrying"}, 10, "B's health")
        doc = health(cb)
        assert doc["status"] == "degraded"
        assert any(p.startswith(f"bootstrap {boot} ") for p in doc["problems"]), doc
        b.wait_for(lambda: any("peer.disconnected" in x and a_id in x for x in b.stderr), 10, "B's disconnect line")
        b.wait_for(lambda: any("health.changed status=degraded" in x for x in b.stderr), 10, "B's health line")
        if forget_known_peers:
            (a.data_dir / "peers.json").unlink()

        since = time.time()
        a = NodeProcess(tmp_path / "a", "--listen", f"/ip4/127.0.0.1/tcp/{port}", "--api-port", "0")
        nodes.append(a)
        ca = client(a)  # waits for its "api on" line
        up = time.monotonic()
        wait(lambda: back(ca, [cb, cc], since), BACK_WITHIN_S, "the restarted peer to be back")
        print(f"back {time.monotonic() - up:.2f} s after its start (known peers forgotten: {forget_known_peers})")
        wait(lambda: health(cb)["status"] == "ok", 10, "B's health to be ok again")
        assert health(ca)["status"] == "ok"
        reconnect = [x for x in b.stderr if "peer.connected" in x and a_id in x]
        assert len(reconnect) >= 2, b.stderr[-20:]  # the first connection, and the one after the restart
        assert "addr=127.0.0.1:" in reconnect[-1]
        assert "Traceback" not in "\n".join(a.stderr + b.stderr + c.stderr)
    finally:
        for n in nodes:
            n.kill()
