"""Several peers on one machine, and a peer whose data dir holds files it cannot read: a second local peer
takes the next free port when the default is taken (the CLI finds its API through DATA_DIR/api), a garbage job
journal or known-peers file is moved aside with a warning and the peer runs, and ``health`` says "degraded"
while a peer has no neighbour and "ok" once it has one, logging each change."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import multiaddr
import pytest
import trio

from pangea_p2p.node import peer as peer_module
from pangea_p2p.node.peer import open_peer
from pangea_p2p.sdk.client import Client
from pangea_p2p.testing import local_config, wait_for

pytestmark = pytest.mark.slow


def taken_port_with_next_free() -> tuple[socket.socket, int]:
    """A listening socket on 127.0.0.1:P whose P + 1 is free (at the time of the call)."""
    for _ in range(50):
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", port + 1))
        except OSError:
            taken.close()
            continue
        finally:
            probe.close()
        taken.listen()
        return taken, port
    raise AssertionError("no free pair of ports")


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """Every record of pangea's loggers while the test runs."""
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler, root = Keep(logging.INFO), logging.getLogger("pangea")
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield seen
    root.removeHandler(handler)
    root.setLevel(old_level)


def events(records: list[logging.LogRecord], name: str) -> list[dict[str, object]]:
    return [getattr(r, "fields", {}) for r in records if r.getMessage() == name]


def test_the_default_listen_port_taken_the_next_free_one_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken, port = taken_port_with_next_free()
    monkeypatch.setattr(peer_module, "DEFAULT_LISTEN", "/ip4/127.0.0.1/tcp/{port}")  # not 0.0.0.0 in tests
    monkeypatch.setattr(peer_module, "DEFAULT_LISTEN_PORT", port)
    with taken:
        assert peer_module._listen_addrs(local_config(tmp_path, listen=[])) == [
            multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{port + 1}")]
    assert peer_module._listen_addrs(local_config(tmp_path, listen=[])) == [
        multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")]  # free again: the default itself


async def test_a_second_local_peer_takes_the_next_api_port_and_survives_garbage_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, records: list[logging.LogRecord]
) -> None:
    taken, port = taken_port_with_next_free()  # "the first peer's" API port
    monkeypatch.setattr(peer_module, "DEFAULT_API_PORT", port)
    data = tmp_path / "second"
    data.mkdir()
    (data / "jobs.sqlite").write_bytes(b"not a journal " * 100)
    (data / "peers.json").write_text("{not json")
    with taken:
        async with open_peer(local_config(data, api__port=None)) as second:
            assert second.api_port == port + 1
            answer = await trio.to_thread.run_sync(lambda: Client.for_data_dir(data).id())  # through DATA_DIR/api
            assert answer["peer_id"] == second.peer_id
            assert (data / "jobs.sqlite.bad").read_bytes() == b"not a journal " * 100
            assert (data / "peers.json.bad").read_text() == "{not json"
            (journal,) = events(records, "journal.unreadable")
            assert journal["then"] == f"a fresh journal; the old one moved to {data / 'jobs.sqlite.bad'}"
            assert events(records, "known_peers.unreadable")
            assert events(records, "api.default_port_taken") == [{"port": port, "using": port + 1}]

            # alone: degraded, and says why
            doc = second.health()
            assert doc["status"] == "degraded"
            assert doc["problems"] == ["no peer connected (no --bootstrap given: waiting for another peer to dial "
                                       "this one)"]
            await wait_for(lambda: events(records, "health.changed"), 10)
            assert events(records, "health.changed")[0]["status"] == "degraded"

            # a neighbour bootstraps from it: both ok, the change logged, the connection too
            third = local_config(tmp_path / "third", [second.addrs()[0]])
            async with open_peer(third) as neighbour:
                await wait_for(lambda: second.health()["status"] == "ok" and neighbour.health()["status"] == "ok", 20)
                # each peer logs its change (both peers log to this process's loggers)
                await wait_for(lambda: [e["status"] for e in events(records, "health.changed")].count("ok") == 2, 10)
                assert {"peer_id": neighbour.peer_id, "direction": "inbound"}.items() <= next(
                    e for e in events(records, "peer.connected") if e["peer_id"] == neighbour.peer_id).items()
            await wait_for(lambda: second.health()["status"] == "degraded", 10)
            assert events(records, "peer.disconnected")
