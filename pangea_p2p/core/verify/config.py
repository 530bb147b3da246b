"""VerifyConfig: the one frozen, validated configuration of the verification subsystem.

Built from keyword arguments (tests, simulator) or from a TOML section with :func:`config_from_mapping`,
which names the offending key in a ConfigError. The wire limits that are part of the format (string lengths,
u16 child counts, ...) are constants of format.py, not settings.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pangea_p2p.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

T = TypeVar("T")


def config_from_mapping(cls: type[T], section: Mapping[str, object], prefix: str) -> T:
    """Build the config dataclass ``cls`` from a TOML-like mapping; ConfigError names ``prefix.key``."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in section.items():
        field = fields.get(key)
        if field is None:
            raise ConfigError(f"{prefix}.{key}", f"unknown key; known keys are {', '.join(sorted(fields))}")
        kwargs[key] = _coerce(f"{prefix}.{key}", field.type, value)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{prefix}.{exc.key}", exc.problem) from None


def _coerce(key: str, annotation: object, value: object) -> object:
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, got {value!r}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"must be a number, got {value!r}")
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value
    raise ConfigError(key, f"cannot be set from a config file (type {kind})")


def check_range(key: str, value: float, low: float, high: float) -> None:
    """ConfigError unless ``low <= value <= high`` (and finite)."""
    if not (isinstance(value, int | float) and math.isfinite(value) and low <= value <= high):
        raise ConfigError(key, f"must be between {low} and {high}, got {value!r}")


@dataclass(frozen=True, slots=True)
class VerifyConfig:
    """Bounds and windows for receipts, delegation trees and voting."""

    receipt_age_max_s: float = 3600.0  # a receipt issued longer ago than this is EXPIRED
    clock_skew_max_s: float = 60.0  # a receipt dated up to this far in the future is still accepted
    replay_entries_max: int = 200_000  # receipts remembered by a ReplayGuard (oldest forgotten first)
    tree_depth_max: int = 8  # delegation levels in one receipt tree (a leaf under the root is depth 1)
    tree_receipts_max: int = 10_000  # receipts in one tree
    tree_bytes_max: int = 8 * 1024 * 1024  # encoded size of one tree
    children_max: int = 1024  # children of one delegation receipt
    replicas_max: int = 9  # replicas of one task, escalations included
    spot_checks_max: int = 64  # chunks re-executed for one spot check

    def __post_init__(self) -> None:
        check_range("receipt_age_max_s", self.receipt_age_max_s, 1.0, 30 * 86400.0)
        check_range("clock_skew_max_s", self.clock_skew_max_s, 0.0, 3600.0)
        check_range("replay_entries_max", self.replay_entries_max, 1, 10_000_000)
        check_range("tree_depth_max", self.tree_depth_max, 1, 64)
        check_range("tree_receipts_max", self.tree_receipts_max, 1, 1_000_000)
        check_range("tree_bytes_max", self.tree_bytes_max, 1024, 1 << 30)
        check_range("children_max", self.children_max, 1, 65535)
        check_range("replicas_max", self.replicas_max, 1, 64)
        check_range("spot_checks_max", self.spot_checks_max, 1, 4096)
        for name in ("replay_entries_max", "tree_depth_max", "tree_receipts_max", "tree_bytes_max",
                     "children_max", "replicas_max", "spot_checks_max"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"must be an integer, got {getattr(self, name)!r}")

    @classmethod
    def from_mapping(cls, section: Mapping[str, object], prefix: str = "verify") -> VerifyConfig:
        return config_from_mapping(cls, section, prefix)
