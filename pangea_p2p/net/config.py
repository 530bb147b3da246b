"""The configuration of the overlays (``overlay.py``), apart from them: reading a peer's configuration (and so
every `pangea` client command) does not load py-libp2p."""

from __future__ import annotations

from dataclasses import dataclass

from pangea_p2p.errors import ConfigError


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """gossipsub parameters (the names of the gossipsub v1.1 spec, units last)."""

    heartbeat_interval_s: float = 1.0
    mesh_degree: int = 6
    mesh_degree_low: int = 4
    mesh_degree_high: int = 12
    seen_ttl_s: int = 120

    def __post_init__(self) -> None:
        if not 0.05 <= self.heartbeat_interval_s <= 60:
            raise ConfigError("gossip.heartbeat_interval_s", f"must be in 0.05..60, got {self.heartbeat_interval_s}")
        if not 1 <= self.mesh_degree_low <= self.mesh_degree <= self.mesh_degree_high <= 64:
            raise ConfigError(
                "gossip.mesh_degree",
                "need 1 <= mesh_degree_low <= mesh_degree <= mesh_degree_high <= 64, got "
                f"{self.mesh_degree_low} <= {self.mesh_degree} <= {self.mesh_degree_high}",
            )
        if not 10 <= self.seen_ttl_s <= 3600:
            raise ConfigError("gossip.seen_ttl_s", f"must be in 10..3600, got {self.seen_ttl_s}")
