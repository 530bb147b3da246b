"""End to end: real ``pangea node`` processes on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.nodeproc import NodeProcess, pangea

pytestmark = pytest.mark.slow
LOCAL = ["--listen", "/ip4/127.0.0.1/tcp/0", "--api-port", "0"]
FAST = ["--set", "capacity.advert_interval_s=1", "--set", "dht.bootstrap_retry_s_min=0.2"]


def peers_of(data_dir: Path) -> list[str]:
    out = pangea("peers", "--data-dir", str(data_dir), "--json")
    assert out.returncode == 0, out.stderr
    return [row["peer_id"] for row in json.loads(out.stdout)["peers"]]


def wait_until(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)  # polling a CLI command: each probe is a new process


def test_second_peer_bootstraps_from_the_first(tmp_path: Path) -> None:
    a = NodeProcess(tmp_path / "a", *LOCAL, *FAST)
    b = None
    try:
        a_addr = a.addrs()[0]
        b = NodeProcess(tmp_path / "b", *LOCAL, *FAST, "--bootstrap", a_addr)
        b.addrs()
        a_id = a_addr.rsplit("/p2p/", 1)[1]
        b_id = json.loads(pangea("id", "--data-dir", str(tmp_path / "b"), "--json").stdout)["peer_id"]
        wait_until(lambda: b_id in peers_of(tmp_path / "a") and a_id in peers_of(tmp_path / "b"), 60, "peers")
        cap = json.loads(pangea("capacity", "--data-dir", str(tmp_path / "a"), "--json").stdout)
        wait_until(lambda: len(json.loads(pangea("capacity", "--data-dir", str(tmp_path / "a"), "--json")
                                          .stdout)["adverts"]) == 2, 60, "both adverts at a")
        assert set(cap["rejected"]) <= {"stale_sequence"}  # a late, older advert is stale, nothing worse
        # clean, quick shutdown on SIGINT (Ctrl-C) and SIGTERM: exit 0, no traceback, no resource warning
        assert b.stop(signal.SIGINT) < 5
        assert a.stop(signal.SIGTERM) < 5
        for node in (a, b):
            assert node.proc.returncode == 0
            err = "\n".join(node.stderr)
            assert "Traceback" not in err, err
            assert "Warning" not in err, err
            assert any("peer.stopped" in line for line in node.stderr)
    finally:
        a.kill()
        if b is not None:
            b.kill()


def test_identity_is_created_once_with_mode_0600_and_reused(tmp_path: Path) -> None:
    first = NodeProcess(tmp_path / "d", *LOCAL)
    try:
        id1 = first.addrs()[0].rsplit("/p2p/", 1)[1]
    finally:
        first.stop()
        first.kill()
    key = tmp_path / "d" / "identity.key"
    assert key.stat().st_mode & 0o777 == 0o600
    again = NodeProcess(tmp_path / "d", *LOCAL)
    try:
        assert again.addrs()[0].rsplit("/p2p/", 1)[1] == id1
    finally:
        again.stop()
        again.kill()


def test_unreachable_bootstrap_keeps_running_and_says_so(tmp_path: Path) -> None:
    ghost = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"
    node = NodeProcess(tmp_path / "n", *LOCAL, *FAST, "--bootstrap", ghost)
    try:
        node.addrs()
        node.wait_for(lambda: sum("bootstrap.unreachable" in x for x in node.stderr) >= 2, 60, "two retries")
        assert node.proc.poll() is None
        health = json.loads(pangea("health", "--data-dir", str(tmp_path / "n"), "--json").stdout)
        assert health["bootstrap"][ghost]["status"] == "retrying"
        assert health["bootstrap"][ghost]["attempts"] >= 2
    finally:
        node.stop()
        node.kill()
