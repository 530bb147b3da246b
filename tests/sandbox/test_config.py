from __future__ import annotations

import pytest

from pangea_p2p.errors import ConfigError
from pangea_p2p.sandbox import SandboxConfig, SandboxLimits
from pangea_p2p.sandbox.config import GiB, MiB


def test_limit_defaults_are_the_issue_values():
    limits = SandboxLimits()
    assert limits.fuel_max == 10_000_000_000
    assert limits.memory_bytes_max == 100 * MiB
    assert limits.wall_time_s == 30.0


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("fuel_max", 0),
        ("fuel_max", 10**16),
        ("fuel_max", True),
        ("memory_bytes_max", 1000),
        ("memory_bytes_max", 5 * GiB),
        ("wall_time_s", 0.0),
        ("wall_time_s", float("nan")),
        ("wall_time_s", "30"),
        ("output_bytes_max", -1),
    ],
)
def test_limits_out_of_range_name_the_key(key, value):
    with pytest.raises(ConfigError) as info:
        SandboxLimits(**{key: value})
    assert info.value.key == key
    assert "allowed range" in info.value.problem or "must be" in info.value.problem


@pytest.mark.parametrize(
    ("key", "value"),
    [("workers", 0), ("wasm_stack_bytes", 2 * MiB + 1), ("module_cache_entries", 0),
     ("module_cache_bytes_max", 0), ("compile_memory_bytes_max", 1 << 20), ("compile_time_s_max", 0.0)],
)
def test_config_out_of_range_names_the_key(key, value):
    with pytest.raises(ConfigError) as info:
        SandboxConfig(**{key: value})
    assert info.value.key == key


def test_config_defaults_to_all_cores():
    import os

    assert SandboxConfig().workers == len(os.sched_getaffinity(0))


def test_excess_over_names_the_first_limit_above_the_maximum():
    maxima = SandboxLimits(fuel_max=1000, wall_time_s=1.0)
    assert SandboxLimits(fuel_max=1000, wall_time_s=1.0).excess_over(maxima) is None
    problem = SandboxLimits(fuel_max=1001, wall_time_s=1.0).excess_over(maxima)
    assert problem is not None
    assert "fuel_max=1001" in problem
    assert "1000" in problem


def test_config_json_round_trip(tmp_path):
    config = SandboxConfig(limits_max=SandboxLimits(fuel_max=5, wall_time_s=2.5), workers=3, cache_dir=tmp_path)
    assert SandboxConfig.from_json(config.to_json()) == config


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(ConfigError) as info:
        SandboxConfig.from_dict({"wokers": 2})
    assert info.value.key == "wokers"
    with pytest.raises(ConfigError) as info:
        SandboxConfig.from_dict({"limits_max": {"fuel": 3}})
    assert info.value.key == "limits_max.fuel"


def test_default_limits_never_exceed_the_node_maxima():
    config = SandboxConfig(limits_max=SandboxLimits(fuel_max=1000, wall_time_s=60.0))
    limits = config.default_limits()
    assert limits.fuel_max == 1000
    assert limits.wall_time_s == 30.0
    assert limits.excess_over(config.limits_max) is None


VALID_LIMITS = {"fuel_max": 10**9, "memory_bytes_max": 64 * MiB, "wall_time_s": 2.5, "output_bytes_max": 4096}


def test_limits_from_a_peer_parse_to_limits():
    assert SandboxLimits.parse(**VALID_LIMITS) == SandboxLimits(**VALID_LIMITS)
    whole_seconds = SandboxLimits.parse(**{**VALID_LIMITS, "wall_time_s": 3})
    assert whole_seconds == SandboxLimits(**{**VALID_LIMITS, "wall_time_s": 3.0})
    assert isinstance(whole_seconds, SandboxLimits)
    assert isinstance(whole_seconds.wall_time_s, float)


@pytest.mark.parametrize(
    ("key", "value"),
    [("fuel_max", 0), ("fuel_max", "many"), ("fuel_max", 1.5), ("memory_bytes_max", 5 * GiB),
     ("memory_bytes_max", True), ("wall_time_s", float("inf")), ("wall_time_s", -1), ("wall_time_s", None),
     ("output_bytes_max", 2 * GiB)],
)
def test_bad_limits_from_a_peer_are_a_rejected_failure_not_a_config_error(key, value):
    from pangea_p2p.errors import FailureKind, Rejected
    from pangea_p2p.sandbox import Failure

    parsed = SandboxLimits.parse(**{**VALID_LIMITS, key: value})
    assert isinstance(parsed, Failure)
    assert parsed.kind is FailureKind.REJECTED
    assert key in parsed.message
    assert "\n" not in parsed.message
    assert isinstance(parsed.to_error(), Rejected)


def test_queue_byte_bound_output_bound_and_quarantine_are_validated():
    for key, value in [("queued_bytes_max", 1000), ("task_output_bytes_max", 3 * GiB), ("quarantine_s", -1.0)]:
        with pytest.raises(ConfigError) as info:
            SandboxConfig(**{key: value})
        assert info.value.key == key
    config = SandboxConfig(queued_bytes_max=2 * GiB, task_output_bytes_max=MiB, quarantine_s=0.0)
    assert SandboxConfig.from_json(config.to_json()) == config
