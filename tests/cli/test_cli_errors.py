"""Bad input to `pangea` gets one clear line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from pangea_p2p.cli.main import main
from pangea_p2p.node import datadir

LOCAL = ["--listen", "/ip4/127.0.0.1/tcp/0", "--api-port", "0"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.startswith("pangea: error:")]
    assert len(lines) == 1, err
    return code, lines[0]


def test_key_file_readable_by_others(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "identity.key"
    key.write_text("pangea-ed25519-v1 " + "00" * 32 + "\n")
    key.chmod(0o644)
    code, line = run(capsys, "node", "--data-dir", str(tmp_path), *LOCAL)
    assert code == 1
    assert "has mode 0644" in line
    assert f"chmod 600 {key}" in line


def test_corrupt_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "identity.key"
    key.write_text("not a key\n")
    key.chmod(0o600)
    code, line = run(capsys, "node", "--data-dir", str(tmp_path), *LOCAL)
    assert code == 1
    assert "is corrupt" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a mode-000 file")
def test_unreadable_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "identity.key"
    key.write_text("pangea-ed25519-v1 " + "00" * 32 + "\n")
    key.chmod(0o000)
    code, line = run(capsys, "node", "--data-dir", str(tmp_path), *LOCAL)
    assert code == 1
    assert "cannot read key file" in line


def test_malformed_listen_multiaddr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, line = run(capsys, "node", "--data-dir", str(tmp_path), "--listen", "/ip4/999.1.1.1/tcp/1", "--api-port", "0")
    assert code == 2
    assert "config listen:" in line
    assert "not a multiaddr" in line


def test_bootstrap_without_peer_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, line = run(capsys, "node", "--data-dir", str(tmp_path), *LOCAL, "--bootstrap", "/ip4/127.0.0.1/tcp/4001")
    assert code == 2
    assert "config bootstrap:" in line
    assert "/p2p/<peer id>" in line


def test_port_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        code, line = run(capsys, "node", "--data-dir", str(tmp_path), "--listen", f"/ip4/127.0.0.1/tcp/{port}",
                         "--api-port", "0")
    finally:
        taken.close()
    assert code == 1
    assert f"cannot listen on /ip4/127.0.0.1/tcp/{port}: port already in use" in line
    assert f"give this peer (data dir {tmp_path}) another port: --listen" in line  # what to do


def test_api_port_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        code, line = run(capsys, "node", "--data-dir", str(tmp_path), "--listen", "/ip4/127.0.0.1/tcp/0",
                         "--api-port", str(port))
    finally:
        taken.close()
    assert code == 1
    assert f"cannot serve the API on 127.0.0.1:{port}" in line
    assert f"give this peer (data dir {tmp_path}) another with --api-port PORT (0 = any free port" in line


def test_a_second_peer_on_the_same_data_dir_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fd = datadir.lock(tmp_path)  # a running peer holds the data dir
    try:
        code, line = run(capsys, "node", "--data-dir", str(tmp_path), *LOCAL)
    finally:
        datadir.unlock(tmp_path, fd)
    assert code == 1
    assert f"another pangea peer (pid {os.getpid()}) is already running with data dir {tmp_path}" in line
    assert "--data-dir DIR (or PANGEA_DATA_DIR=DIR)" in line


def test_key_file_that_is_not_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "identity.key").mkdir()  # unreadable as a key even for root
    code, line = run(capsys, "node", "--data-dir", str(tmp_path), *LOCAL)
    assert code == 1
    assert f"key file {tmp_path / 'identity.key'} is not a regular file" in line


@pytest.mark.parametrize("content", [b"garbage!!\n", b"\xff\xfe\x00\x01", b"127.0.0.1:99999\n", b""])
def test_a_garbage_api_file_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    (tmp_path / "api").write_bytes(content)
    code, line = run(capsys, "peers", "--data-dir", str(tmp_path))
    assert code == 1
    assert f"{tmp_path / 'api'} does not hold the API's host:port" in line
    assert "delete that file" in line
    assert "--api HOST:PORT" in line


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("capacity.advert_interval_s=0", "config capacity.advert_interval_s: must be in"),
        ("gossip.mesh_degree=100", "config gossip.mesh_degree:"),
        ("dht.mode=turbo", "config dht.mode: must be 'server' or 'client'"),
        ("api.port=70000", "config api.port: must be in 0..65535"),
        ("api.host=0.0.0.0", "config api.host: '0.0.0.0' is not loopback"),
        ("capacity.tasks=3", "config capacity.tasks: unknown key"),
        ("capacity.task_slots=many", "config capacity.task_slots: must be an integer"),
        ("capacity.directory.peers_max=0", "config capacity.directory.peers_max: must be in"),
        ("coordinator.timeout_factor=0.5",
         "config coordinator.timeout_factor: must be between 1.0 and 1000.0, got 0.5"),
        ("coordinator.unreachable_cooldown_s=-1", "config coordinator.unreachable_cooldown_s: must be between 0.0 and"),
        ("coordinator.scheduler.speed_cap_factor=0", "config coordinator.scheduler.speed_cap_factor: must be between"),
        ("coordinator.scheduler.trust_floor=nan", "config coordinator.scheduler.trust_floor: must be between"),
        ("coordinator.scheduler.parts_max=4",
         "config coordinator.scheduler.parts_max: is set by compute.split_parts_max"),
        ("coordinator.verify.replicas_max=3", "config coordinator.verify: is set by the [verify] section"),
        ("coordinator.retries=3", "config coordinator.retries: unknown key; known keys here: scheduler, "
                                  "timeout_factor, unreachable_cooldown_s"),
        ("verify.replicas_max=0", "config verify.replicas_max: must be between 1 and 64, got 0"),
        ("verify.tree_depth_max=true", "config verify.tree_depth_max: must be an integer, got True"),
        ("verify=3", "config verify: must be a table"),
        ("trust.half_life_s=0", "config trust.half_life_s: must be between 1.0 and"),
    ],
)
def test_bad_config_values_name_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str, expected: str
) -> None:
    code, line = run(capsys, "node", "--data-dir", str(tmp_path), "--listen", "/ip4/127.0.0.1/tcp/0", "--set", setting)
    assert code == 2
    assert expected in line


def test_config_file_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, line = run(capsys, "node", "--data-dir", str(tmp_path), "--config", str(tmp_path / "missing.toml"))
    assert code == 2
    assert "does not exist" in line
    bad = tmp_path / "bad.toml"
    bad.write_text("listen = [\n")
    code, line = run(capsys, "node", "--data-dir", str(tmp_path), "--config", str(bad))
    assert code == 2
    assert "is not valid TOML" in line
    typo = tmp_path / "typo.toml"
    typo.write_text("[gossip]\nheartbeat_interval = 1\n")
    code, line = run(capsys, "node", "--data-dir", str(tmp_path), "--config", str(typo))
    assert code == 2
    assert "gossip.heartbeat_interval: unknown key" in line


def test_client_commands_without_a_running_peer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, line = run(capsys, "peers", "--data-dir", str(tmp_path))
    assert code == 1
    assert "no peer is running with data dir" in line
    code, line = run(capsys, "id", "--api", "127.0.0.1:9")
    assert code == 1
    assert "no peer answers at http://127.0.0.1:9" in line
