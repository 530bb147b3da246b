"""DATA_DIR/peers.json: the peers a restarted peer dials at once (node/known_peers.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pangea_p2p.node.known_peers import ADDRS_MAX, FILE_NAME, PEERS_MAX, KnownPeers


def test_peers_round_trip_most_recent_first_and_bounded(tmp_path: Path) -> None:
    known = KnownPeers(tmp_path)
    assert known.load() == []  # no file: nobody known
    for i in range(PEERS_MAX + 5):
        known.update(f"peer{i}", [f"/ip4/127.0.0.1/tcp/{4000 + j}" for j in range(ADDRS_MAX + 2)], now=1000.0 + i)
    known.update("no-address", [], now=5000.0)  # never written: it could not be dialed
    assert known.save()
    again = KnownPeers(tmp_path).load()
    assert len(again) == PEERS_MAX
    assert [p.peer_id for p in again[:2]] == [f"peer{PEERS_MAX + 4}", f"peer{PEERS_MAX + 3}"]  # newest first
    assert "peer0" not in {p.peer_id for p in again}  # the oldest were dropped
    assert all(len(p.addrs) == ADDRS_MAX for p in again)


def test_an_unchanged_peer_is_not_written_again(tmp_path: Path) -> None:
    known = KnownPeers(tmp_path)
    known.update("a", ["/ip4/127.0.0.1/tcp/1"], now=100.0)
    assert known.save()
    (tmp_path / FILE_NAME).unlink()
    known.update("a", ["/ip4/127.0.0.1/tcp/1"], now=110.0)  # the same, seen again soon
    assert known.save()
    assert not (tmp_path / FILE_NAME).exists()
    known.update("a", ["/ip4/127.0.0.1/tcp/2"], now=111.0)  # a new address: written
    assert known.save()
    assert json.loads((tmp_path / FILE_NAME).read_text())["peers"][0]["addrs"] == ["/ip4/127.0.0.1/tcp/2"]


@pytest.mark.parametrize("content", ["{not json", '{"peers": [{"peer_id": 3}]}', '{"peers": 1}', "[]",
                                     '{"peers": [{"peer_id": "a", "addrs": ["x"], "seen_at": "then"}]}'])
def test_a_garbage_file_is_moved_aside_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    (tmp_path / FILE_NAME).write_text(content)
    with caplog.at_level(logging.WARNING, logger="pangea.peer"):
        assert KnownPeers(tmp_path).load() == []
    (warning,) = [r for r in caplog.records if r.getMessage() == "known_peers.unreadable"]
    assert warning.fields["then"] == (  # type: ignore[attr-defined]
        f"starting with no known peers; the file moved to {tmp_path / (FILE_NAME + '.bad')}")
    assert (tmp_path / (FILE_NAME + ".bad")).read_text() == content
