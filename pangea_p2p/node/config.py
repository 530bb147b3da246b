"""The peer's configuration: one frozen, validated object built from a TOML file and CLI flags.

Precedence: built-in defaults < TOML file (``--config FILE``, or ``DATA_DIR/config.toml`` if it exists) <
command-line flags (``--listen``, ``--bootstrap``, ... and the generic ``--set section.key=value``).
Every bad value raises ``ConfigError`` naming the dotted key and the allowed range; unknown keys are errors
too (a typo must not silently fall back to a default).

A section is a frozen dataclass, the node's own or the core object it configures as it is (``[coordinator]`` is
the ``CoordinatorConfig`` every coordinator of this peer gets, ``[verify]`` the ``VerifyConfig`` it checks
receipts by, ``[trust]`` its ``TrustBook``'s ``TrustConfig``, ``[fraud]`` the ``FraudConfig`` of the fraud proofs
it takes in). A setting has one key: the fields of a core object
that another key sets (SET_ELSEWHERE) are refused where they are and filled in by ``NodeConfig``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pangea_p2p.core.capacity import DirectoryConfig
from pangea_p2p.core.jobs.config import CoordinatorConfig
from pangea_p2p.core.trust import TrustConfig
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.fraud import FraudConfig
from pangea_p2p.datadir import default_data_dir
from pangea_p2p.errors import ConfigError
from pangea_p2p.net.config import GossipConfig
from pangea_p2p.net.nat import NatConfig

_T = typing.TypeVar("_T")

DEFAULT_LISTEN = "/ip4/0.0.0.0/tcp/{port}"  # with the first free port from DEFAULT_LISTEN_PORT up
DEFAULT_LISTEN_PORT = 4001
DEFAULT_API_PORT = 5101  # or the first free port from here up
DEFAULT_PORTS_TRIED = 16  # ports tried from a default port up (then any free port)
CONFIG_FILE_NAME = "config.toml"
# Fields of core config objects that another key sets: dotted key -> the key to use.
SET_ELSEWHERE = {
    "coordinator.verify": "the [verify] section",
    "coordinator.scheduler.split_above_s": "compute.split_above_s",
    "coordinator.scheduler.parts_max": "compute.split_parts_max",
}


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """The local HTTP API (pangea_p2p/node/api.py says who may use it). Loopback only unless ``allow_remote`` says
    otherwise; with it on, every request needs the API token. ``allowed_hosts``: the names (or addresses) the API
    answers to besides loopback and ``host``, as a client's Host header gives them ("*": any). ``port`` unset:
    5101, or the next free port when another local peer has it (the CLI finds it in DATA_DIR/api); set, exactly
    that one."""

    host: str = "127.0.0.1"
    port: int | None = None
    allow_remote: bool = False
    allowed_hosts: tuple[str, ...] = ()
    request_bytes_max: int = 64 << 20
    connections_max: int = 64  # open at once; the API never holds more file descriptors than this
    idle_timeout_s: float = 10.0  # a client that sends or takes nothing for this long is dropped

    def __post_init__(self) -> None:
        if self.port is not None and not 0 <= self.port <= 65535:
            raise ConfigError("api.port", f"must be in 0..65535 (0 = any free port), got {self.port}")
        if self.host not in {"127.0.0.1", "::1", "localhost"} and not self.allow_remote:
            raise ConfigError("api.host", f"{self.host!r} is not loopback; set api.allow_remote = true to expose it")
        for name in self.allowed_hosts:
            if not name or len(name) > 255 or any(c.isspace() or c in "/@?#" for c in name):
                raise ConfigError("api.allowed_hosts", f"{name!r} is not a host name or address (or \"*\")")
        if not 1024 <= self.request_bytes_max <= 1 << 30:
            raise ConfigError("api.request_bytes_max", f"must be in 1024..1073741824, got {self.request_bytes_max}")
        if not 1 <= self.connections_max <= 10_000:
            raise ConfigError("api.connections_max", f"must be in 1..10000, got {self.connections_max}")
        if not 0.05 <= self.idle_timeout_s <= 3600:
            raise ConfigError("api.idle_timeout_s", f"must be in 0.05..3600 seconds, got {self.idle_timeout_s}")


@dataclass(frozen=True, slots=True)
class CapacityConfig:
    """What this peer advertises and how often."""

    advert_interval_s: float = 10.0
    advert_ttl_s: float = 30.0
    task_slots: int = 0  # 0: one per core
    network_adverts_per_s_max: float = 10.0
    directory: DirectoryConfig = field(default_factory=DirectoryConfig)

    def __post_init__(self) -> None:
        gap = 2.0 * self.directory.interval_s_min  # AdvertPublisher.DEFAULT_GAP_FACTOR
        if not max(0.1, gap) <= self.advert_interval_s <= 3600:
            raise ConfigError(
                "capacity.advert_interval_s",
                f"must be in {max(0.1, gap)}..3600 (at least 2 x capacity.directory.interval_s_min), "
                f"got {self.advert_interval_s}",
            )
        if not self.advert_interval_s < self.advert_ttl_s <= self.directory.ttl_s_max:
            raise ConfigError(
                "capacity.advert_ttl_s",
                f"must be above advert_interval_s ({self.advert_interval_s}) and at most "
                f"capacity.directory.ttl_s_max ({self.directory.ttl_s_max}), got {self.advert_ttl_s}",
            )
        if not 0.01 <= self.network_adverts_per_s_max <= 10_000:
            raise ConfigError(
                "capacity.network_adverts_per_s_max", f"must be in 0.01..10000, got {self.network_adverts_per_s_max}"
            )
        if not 0 <= self.task_slots <= 4096:
            raise ConfigError("capacity.task_slots", f"must be in 0..4096 (0 = one per core), got {self.task_slots}")


@dataclass(frozen=True, slots=True)
class DhtConfig:
    """Kademlia settings. ``server`` mode answers queries (the default: every peer is reachable on a LAN)."""

    mode: str = "server"
    refresh_interval_s: float = 60.0
    bootstrap_retry_s_min: float = 1.0
    bootstrap_retry_s_max: float = 10.0  # a lost bootstrap peer is redialed at least this often

    def __post_init__(self) -> None:
        if self.mode not in {"server", "client"}:
            raise ConfigError("dht.mode", f"must be 'server' or 'client', got {self.mode!r}")
        if not 1.0 <= self.refresh_interval_s <= 86400:
            raise ConfigError("dht.refresh_interval_s", f"must be in 1..86400, got {self.refresh_interval_s}")
        if not 0.01 <= self.bootstrap_retry_s_min <= self.bootstrap_retry_s_max <= 3600:
            raise ConfigError(
                "dht.bootstrap_retry_s_min",
                f"need 0.01 <= bootstrap_retry_s_min <= bootstrap_retry_s_max <= 3600, got "
                f"{self.bootstrap_retry_s_min}, {self.bootstrap_retry_s_max}",
            )


@dataclass(frozen=True, slots=True)
class ComputeConfig:
    """What this peer runs for others, and how it runs the jobs it submits."""

    queue_max: int = 8  # admitted tasks beyond the running ones
    sandbox_workers: int = 0  # 0: one per task slot
    fuel_max: int = 100_000_000_000  # the largest per-task limits this peer accepts
    memory_bytes_max: int = 256 << 20
    wall_time_s_max: float = 300.0
    output_bytes_max: int = 64 << 20
    input_bytes_max: int = 256 << 20
    depth_max: int = 4
    split_above_s: float = 30.0  # a received task expected to take longer than this here is split
    split_parts_max: int = 16  # a split makes at most this many parts

    def __post_init__(self) -> None:
        checks = [
            ("queue_max", 0 <= self.queue_max <= 65536, "0..65536"),
            ("sandbox_workers", 0 <= self.sandbox_workers <= 256, "0..256 (0 = one per task slot)"),
            ("fuel_max", 1000 <= self.fuel_max <= 10**15, "1000..10^15"),
            ("memory_bytes_max", 1 << 20 <= self.memory_bytes_max <= 4 << 30, "1 MiB..4 GiB"),
            ("wall_time_s_max", 0.01 <= self.wall_time_s_max <= 86400, "0.01..86400"),
            ("output_bytes_max", 1024 <= self.output_bytes_max <= 1 << 30, "1 KiB..1 GiB"),
            ("input_bytes_max", 1024 <= self.input_bytes_max <= 4 << 30, "1 KiB..4 GiB"),
            ("depth_max", 0 <= self.depth_max <= 8, "0..8"),
            ("split_above_s", 0.001 <= self.split_above_s <= 86400, "0.001..86400"),
            ("split_parts_max", 2 <= self.split_parts_max <= 1024, "2..1024"),
        ]
        for key, ok, allowed in checks:
            if not ok:
                raise ConfigError(f"compute.{key}", f"must be in {allowed}, got {getattr(self, key)}")


FAULTS = ("", "wrong_output")


@dataclass(frozen=True, slots=True)
class FaultsConfig:
    """Deliberate misbehaviour, for tests of the network's defences only (needs PANGEA_ALLOW_FAULTS=1)."""

    byzantine: str = ""  # "wrong_output": sign and return corrupted outputs

    def __post_init__(self) -> None:
        if self.byzantine not in FAULTS:
            raise ConfigError("faults.byzantine", f"must be one of {FAULTS}, got {self.byzantine!r}")
        if self.byzantine and os.environ.get("PANGEA_ALLOW_FAULTS") != "1":
            raise ConfigError("faults.byzantine", "is for tests only: set PANGEA_ALLOW_FAULTS=1 to use it")


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    format: str = "text"
    libp2p_level: str = "off"

    def __post_init__(self) -> None:
        levels = {"debug", "info", "warning", "error"}
        if self.level not in levels:
            raise ConfigError("log.level", f"must be one of {sorted(levels)}, got {self.level!r}")
        if self.format not in {"text", "json"}:
            raise ConfigError("log.format", f"must be 'text' or 'json', got {self.format!r}")
        if self.libp2p_level not in levels | {"off"}:
            raise ConfigError(
                "log.libp2p_level", f"must be 'off' or one of {sorted(levels)}, got {self.libp2p_level!r}"
            )


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything a peer needs to start."""

    data_dir: Path = field(default_factory=default_data_dir)
    # empty: /ip4/0.0.0.0/tcp/4001, or the next free port when another local peer has it; given: exactly those
    listen: tuple[str, ...] = ()
    bootstrap: tuple[str, ...] = ()
    max_connections: int = 300
    api: ApiConfig = field(default_factory=ApiConfig)
    capacity: CapacityConfig = field(default_factory=CapacityConfig)
    gossip: GossipConfig = field(default_factory=GossipConfig)
    dht: DhtConfig = field(default_factory=DhtConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    # what the peer's coordinators get (jobs submitted here and tasks it splits); its scheduler also decides
    # whether a received task is split. Its verify and split settings are the [verify] and compute.split_* ones.
    coordinator: CoordinatorConfig = field(default_factory=CoordinatorConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)  # how this peer checks receipts and trees
    trust: TrustConfig = field(default_factory=TrustConfig)  # how it scores the workers it checked
    fraud: FraudConfig = field(default_factory=FraudConfig)  # the fraud proofs it takes in and re-runs
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    nat: NatConfig = field(default_factory=NatConfig)  # reachability, relays, port mapping (net/nat.py)

    def __post_init__(self) -> None:
        if len(self.listen) > 16 or len(self.bootstrap) > 64:
            raise ConfigError("listen", "at most 16 listen and 64 bootstrap addresses")
        if not 8 <= self.max_connections <= 100_000:
            raise ConfigError("max_connections", f"must be in 8..100000, got {self.max_connections}")
        # One key per setting (SET_ELSEWHERE): the coordinator object carries the values of the keys that set it.
        sched = replace(self.coordinator.scheduler, split_above_s=self.compute.split_above_s,
                        parts_max=self.compute.split_parts_max)
        object.__setattr__(self, "coordinator", replace(self.coordinator, scheduler=sched, verify=self.verify))


def load_config(
    config_file: Path | None = None, overrides: Mapping[str, Any] | None = None, data_dir: Path | None = None
) -> NodeConfig:
    """Defaults < ``config_file`` (or DATA_DIR/config.toml when present) < ``overrides`` (dotted keys)."""
    values: dict[str, Any] = {}
    base_dir = data_dir or default_data_dir()
    implicit = base_dir / CONFIG_FILE_NAME
    path = config_file or (implicit if implicit.exists() else None)
    if path is not None:
        values = _read_toml(path)
    if data_dir is not None:
        values["data_dir"] = str(data_dir)
    for key, value in (overrides or {}).items():
        _set_dotted(values, key, value)
    return build(NodeConfig, values, "")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("config", f"file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None


def _set_dotted(values: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = values
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(key, f"{part} is not a section")
        node = child
    node[last] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``section.key=value`` from the command line; the value is read as TOML (numbers, booleans, lists)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError("--set", f"{text!r} is not of the form section.key=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is a string
    return key.strip(), value


def build(cls: type[_T], values: Mapping[str, Any], prefix: str) -> _T:
    """Construct the frozen dataclass ``cls`` from a TOML-like mapping, checking keys and types."""
    if not isinstance(values, Mapping):
        raise ConfigError(prefix.rstrip(".") or "config", "must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if prefix + f.name not in SET_ELSEWHERE}  # type: ignore[arg-type]
    for name in values:
        if prefix + name in SET_ELSEWHERE:
            raise ConfigError(prefix + name, f"is set by {SET_ELSEWHERE[prefix + name]}")
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(prefix + unknown[0], f"unknown key; known keys here: {', '.join(sorted(fields))}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        kwargs[name] = _coerce(hints[name], value, prefix + name)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        # sub-configs (e.g. the core's DirectoryConfig) name their own keys; say where they sit in this file
        key = exc.key if exc.key.startswith(prefix) else prefix + exc.key.rsplit(".", 1)[-1]
        raise ConfigError(key, exc.problem) from None


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return build(typing.cast(type[Any], hint), value, key + ".")
    origin = typing.get_origin(hint)
    if hint is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(key, f"must be a path string, got {value!r}")
        return Path(value).expanduser()
    if origin is tuple:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
            raise ConfigError(key, f"must be a list of strings, got {value!r}")
        return tuple(items)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string, got {value!r}")
        return value
    if isinstance(hint, types.UnionType):  # an optional setting (X | None): unset, or an X
        if value is None:  # from Python only (TOML has no null): the same as not giving it
            return None
        (inner,) = [h for h in typing.get_args(hint) if h is not type(None)]
        return _coerce(inner, value, key)
    raise ConfigError(key, f"unsupported setting type {hint}")  # pragma: no cover
