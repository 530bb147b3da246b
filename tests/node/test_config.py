from __future__ import annotations

from pathlib import Path

import pytest

from pangea_p2p.errors import ConfigError
from pangea_p2p.node.config import load_config, parse_override


def test_defaults(tmp_path: Path) -> None:
    cfg = load_config(data_dir=tmp_path)
    assert cfg.data_dir == tmp_path
    assert cfg.listen == ("/ip4/0.0.0.0/tcp/4001",)
    assert cfg.api.host == "127.0.0.1"
    assert cfg.gossip.heartbeat_interval_s == 1.0
    assert cfg.gossip.mesh_degree == 6


def test_file_then_flags_take_precedence(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('listen = ["/ip4/127.0.0.1/tcp/5000"]\n[capacity]\nadvert_interval_s = 5\ntask_slots = 3\n')
    cfg = load_config(f, {"capacity.task_slots": 8}, tmp_path)
    assert cfg.listen == ("/ip4/127.0.0.1/tcp/5000",)
    assert cfg.capacity.advert_interval_s == 5.0
    assert cfg.capacity.task_slots == 8


def test_config_toml_in_data_dir_is_read(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[dht]\nmode = 'client'\n")
    assert load_config(data_dir=tmp_path).dht.mode == "client"


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load_config(data_dir=tmp_path)
    with pytest.raises(AttributeError):
        cfg.listen = ()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a.b=1", ("a.b", 1)), ("a=1.5", ("a", 1.5)), ("a=true", ("a", True)), ("a=word", ("a", "word")),
     ('a=["x", "y"]', ("a", ["x", "y"]))],
)
def test_parse_override(text: str, expected: tuple[str, object]) -> None:
    assert parse_override(text) == expected


def test_parse_override_needs_equals() -> None:
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        parse_override("novalue")


def test_ttl_must_exceed_interval(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"capacity\.advert_ttl_s"):
        load_config(None, {"capacity.advert_interval_s": 10, "capacity.advert_ttl_s": 5}, tmp_path)


def test_section_must_be_a_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="gossip: must be a table"):
        load_config(None, {"gossip": 3}, tmp_path)
