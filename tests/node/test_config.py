from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pangea_p2p.core.jobs.config import CoordinatorConfig
from pangea_p2p.core.trust import TrustConfig
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.errors import ConfigError
from pangea_p2p.node.config import SET_ELSEWHERE, load_config, parse_override


def test_defaults(tmp_path: Path) -> None:
    cfg = load_config(data_dir=tmp_path)
    assert cfg.data_dir == tmp_path
    assert cfg.listen == ()  # /ip4/0.0.0.0/tcp/4001 or the next free port (node/peer.py)
    assert (cfg.api.host, cfg.api.port) == ("127.0.0.1", None)  # 5101 or the next free port
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


def test_coordinator_verify_and_trust_sections_from_the_file_and_flags(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[coordinator]\nunreachable_cooldown_s = 7\n[coordinator.scheduler]\ntrust_floor = -3\n"
                 "[verify]\nreplicas_max = 5\n[trust]\nhalf_life_s = 3600\n[compute]\nsplit_above_s = 12\n")
    cfg = load_config(f, {"coordinator.timeout_factor": 4, "verify.clock_skew_max_s": 5,
                          "coordinator.scheduler.speed_cap_factor": 3}, tmp_path)
    assert (cfg.coordinator.unreachable_cooldown_s, cfg.coordinator.timeout_factor) == (7.0, 4.0)
    assert (cfg.coordinator.scheduler.trust_floor, cfg.coordinator.scheduler.speed_cap_factor) == (-3.0, 3.0)
    assert (cfg.verify.replicas_max, cfg.verify.clock_skew_max_s, cfg.trust.half_life_s) == (5, 5.0, 3600.0)
    # one key per setting: the coordinator's verify and split settings are those of [verify] and [compute]
    assert cfg.coordinator.verify is cfg.verify
    assert cfg.coordinator.scheduler.split_above_s == 12.0
    assert cfg.coordinator.scheduler.parts_max == cfg.compute.split_parts_max == 16


def test_the_new_sections_default_to_the_core_defaults(tmp_path: Path) -> None:
    cfg = load_config(data_dir=tmp_path)
    assert (cfg.coordinator, cfg.verify, cfg.trust) == (CoordinatorConfig(), VerifyConfig(), TrustConfig())


@pytest.mark.parametrize("key", sorted(SET_ELSEWHERE))
def test_a_setting_has_one_key(tmp_path: Path, key: str) -> None:
    value = {"replicas_max": 3} if key.endswith("verify") else 4
    with pytest.raises(ConfigError) as info:
        load_config(None, {key: value}, tmp_path)
    assert info.value.key == key
    assert info.value.problem == f"is set by {SET_ELSEWHERE[key]}"


def readme_config_block() -> dict[str, dict[str, str]]:
    """{section path ("" for the top level): {key: its documented default, as written}} from the README."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = text.split("### Configuration", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    sections: dict[str, dict[str, str]] = {"": {}}
    section = ""
    for line in block.splitlines():
        head, _, comment = line.partition("#")
        if head.strip().startswith("["):
            section = head.strip().strip("[]")
            sections[section] = {}
        elif head.strip():
            key, _, value = head.partition("=")
            sections[""][key.strip()] = value.strip()
        for match in re.finditer(r"(\w+) = (.+?)(?=, \w+ = |,?$)", comment.strip()):
            sections[section][match[1]] = match[2]
    return sections


def test_the_readme_documents_every_key_with_its_default(tmp_path: Path) -> None:
    defaults = load_config(data_dir=tmp_path)
    documented = readme_config_block()
    for section, keys in documented.items():
        obj: Any = defaults
        for part in filter(None, section.split(".")):
            obj = getattr(obj, part)
        prefix = f"{section}." if section else ""
        settable = {f.name for f in dataclasses.fields(obj) if not dataclasses.is_dataclass(getattr(obj, f.name))
                    and prefix + f.name not in SET_ELSEWHERE and f.name != "data_dir"}
        assert set(keys) == settable, section
        for key, text in keys.items():
            if getattr(obj, key) is None:  # an optional setting: documented as "unset (what that means)"
                assert text.startswith("unset ("), f"{prefix}{key}"
                continue
            value = tomllib.loads(f"v = {text.split(' (')[0].split(' | ')[0]}")["v"]
            default = getattr(obj, key)
            assert value == (list(default) if isinstance(default, tuple) else default), f"{prefix}{key}"
    sections = {f"{p}{f.name}" for p, o in [("", defaults), ("capacity.", defaults.capacity),
                                            ("coordinator.", defaults.coordinator)]
                for f in dataclasses.fields(o) if dataclasses.is_dataclass(getattr(o, f.name))}
    assert sections - set(SET_ELSEWHERE) == set(documented) - {""}


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("api.connections_max", 0, "must be in 1..10000, got 0"),
    ("api.idle_timeout_s", float("nan"), "must be in 0.05..3600 seconds, got nan"),
    ("api.idle_timeout_s", 0, "must be in 0.05..3600 seconds, got 0.0"),
    ("api.allowed_hosts", ["ok.lan", "a b"], "'a b' is not a host name or address (or \"*\")"),
    ("api.allowed_hosts", [""], "'' is not a host name or address"),
    ("api.allowed_hosts", "http://x/", "'http://x/' is not a host name or address"),
])
def test_bad_api_settings_are_named(tmp_path: Path, key: str, value: object, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {key: value}, tmp_path)
    assert info.value.key == key
    assert info.value.problem.startswith(problem)


def test_api_settings_from_flags(tmp_path: Path) -> None:
    cfg = load_config(None, dict(parse_override(s) for s in ("api.allowed_hosts=['peer.lan', '10.0.0.5']",
                                                              "api.connections_max=8", "api.idle_timeout_s=0.5")),
                      tmp_path)
    assert (cfg.api.allowed_hosts, cfg.api.connections_max, cfg.api.idle_timeout_s) == (
        ("peer.lan", "10.0.0.5"), 8, 0.5)
