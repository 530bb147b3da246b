"""Helpers to run several peers in one trio process on 127.0.0.1 (tests, benchmarks, experiments)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from pangea_p2p.core.identity import Identity
from pangea_p2p.node.config import NodeConfig, load_config
from pangea_p2p.node.peer import Peer, open_peer

FAST_SETTINGS: dict[str, Any] = {
    "listen": ["/ip4/127.0.0.1/tcp/0"],
    "api.port": 0,
    "capacity.advert_interval_s": 1.0,
    "capacity.advert_ttl_s": 10.0,
    "dht.bootstrap_retry_s_min": 0.1,
    "dht.bootstrap_retry_s_max": 1.0,
}


def local_config(data_dir: Path, bootstrap: list[str] | None = None, **overrides: Any) -> NodeConfig:
    """A config for a peer on 127.0.0.1 with short timers (``overrides`` use dotted keys with '__' for '.')."""
    settings: dict[str, Any] = dict(FAST_SETTINGS)
    settings.update({k.replace("__", "."): v for k, v in overrides.items()})
    if bootstrap:
        settings["bootstrap"] = bootstrap
    return load_config(None, settings, data_dir)


@asynccontextmanager
async def open_network(
    n: int, base_dir: Path, settings: Mapping[str, Any] | None = None, seeds: list[bytes] | None = None
) -> AsyncIterator[list[Peer]]:
    """``n`` peers; peer 0 first, every other one bootstrapping from peer 0's address only."""
    extra = {k.replace(".", "__"): v for k, v in (settings or {}).items()}
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            open_peer(local_config(base_dir / "p0", **extra), _identity(seeds, 0))
        )
        peers = [first]
        boot = [first.addrs()[0]]
        for i in range(1, n):
            cfg = local_config(base_dir / f"p{i}", boot, **extra)
            peers.append(await stack.enter_async_context(open_peer(cfg, _identity(seeds, i))))
        yield peers


def _identity(seeds: list[bytes] | None, i: int) -> Identity | None:
    return Identity(seeds[i]) if seeds else None


async def wait_for(predicate: Any, timeout_s: float, poll_s: float = 0.05) -> None:
    """Wait until ``predicate()`` is true; trio.TooSlowError after ``timeout_s``. Polls (cheap predicates only)."""
    with trio.fail_after(timeout_s):
        # Polling, not an Event: the states waited on (libp2p routing tables, connections) change inside
        # py-libp2p, which signals nothing. Bounded by the deadline.
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(poll_s)
