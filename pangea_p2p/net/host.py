"""Building a py-libp2p host the way pangea needs it, and the few host operations the node uses.

Workarounds applied here (notes/py-libp2p-0.8.1.md §9; each has a test in tests/net/test_workarounds.py):

- ``max_connections_per_peer=1`` (§9.1): with the default 3, ``Swarm.dial_peer`` waits out a fixed 250 ms
  "happy eyeballs" delay after the last address on *every* dial, because it only stops early once the
  per-peer connection count is reached.
- the AutoConnector is turned off (§9.2): ``min_connections=0, low_watermark=0`` and a huge interval here,
  and its ``maybe_connect`` made a no-op in ``workarounds`` (the swarm also calls it on every disconnect).
- ``open_stream`` wraps ``new_stream`` in a deadline (§9.8): when the resource manager's stream limit is hit,
  ``new_stream`` hangs instead of failing.
- ``connect`` lifts py-libp2p's negative dial cache before a deliberate dial: after one failed dial the swarm
  refuses every dial of that peer for 60 s ("recently failed all addresses"), so a peer that restarted within
  that minute could not be redialed, whatever the caller's own backoff said.
- ``close_hosts`` closes hosts concurrently (§9.3): leaving ``host.run()`` does not close the TCP listener, and
  pubsub can raise "Nursery is closed to new arrivals" if its services unwind while a host is still open.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable, Sequence

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.utils.address_validation import expand_wildcard_address

from pangea_p2p.core.identity import Identity
from pangea_p2p.errors import ConfigError, TransportError
from pangea_p2p.net import workarounds

STREAM_OPEN_TIMEOUT_S = 10.0
AUTO_CONNECT_OFF_INTERVAL_S = 1e9


def connection_config(max_connections: int = 300) -> ConnectionConfig:
    """The swarm settings every pangea host uses (see the module docstring for why)."""
    return ConnectionConfig(
        max_connections=max_connections,
        max_connections_per_peer=1,
        min_connections=0,
        low_watermark=0,
        high_watermark=max_connections,
        auto_connect_interval=AUTO_CONNECT_OFF_INTERVAL_S,
    )


def make_host(identity: Identity, max_connections: int = 300) -> IHost:
    """A TCP + Noise + Yamux host with ``identity``'s key (the peer id is the same one the core computes).

    py-libp2p's own UPnP (``enable_upnp``) stays off: ``nat.upnp`` is net/upnp.py, run by NatService."""
    workarounds.apply()
    key_pair = create_new_key_pair(identity.seed)
    host = new_host(key_pair=key_pair, connection_config=connection_config(max_connections), muxer_preference="YAMUX")
    if str(host.get_id()) != identity.peer_id:
        raise AssertionError("libp2p derived a different peer id from the same key")
    return host


def parse_multiaddr(text: str, what: str) -> multiaddr.Multiaddr:
    """A Multiaddr, or ConfigError naming ``what`` (the config key) and the problem."""
    try:
        return multiaddr.Multiaddr(text)
    except Exception as exc:
        raise ConfigError(what, f"{text!r} is not a multiaddr ({exc})") from None


def parse_peer_addr(text: str, what: str) -> PeerInfo:
    """A full peer address ``/ip4/A/tcp/P/p2p/12D3Koo...``, or ConfigError saying what is missing."""
    addr = parse_multiaddr(text, what)
    try:
        return info_from_p2p_addr(addr)
    except Exception as exc:
        raise ConfigError(what, f"{text!r} must end in /p2p/<peer id> ({exc})") from None


def check_listen_addr_free(addr: multiaddr.Multiaddr) -> None:
    """Raise TransportError if a TCP listen address cannot be bound (port in use, address not local).

    py-libp2p only logs a failed listen and carries on with no address, so the node checks first.
    """
    protocols = [p.name for p in addr.protocols()]
    if "tcp" not in protocols:
        raise ConfigError("listen", f"{addr} is not a TCP address; pangea peers listen on TCP")
    port = int(addr.value_for_protocol("tcp"))
    if port == 0:
        return
    family, host = (socket.AF_INET6, addr.value_for_protocol("ip6")) if "ip6" in protocols else (
        socket.AF_INET, addr.value_for_protocol("ip4"))
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        reason = "port already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise TransportError(f"cannot listen on {addr}: {reason}") from None
    finally:
        sock.close()


def dialable_addrs(host: IHost) -> list[str]:
    """The host's listen addresses with wildcard IPs expanded to this machine's interfaces, without /p2p/."""
    out: list[str] = []
    for addr in host.get_transport_addrs():
        for concrete in expand_wildcard_address(addr):
            text = str(concrete)
            if text not in out:
                out.append(text)
    return out


def full_addrs(host: IHost) -> list[str]:
    """``dialable_addrs`` with ``/p2p/<peer id>``: what another peer passes as --bootstrap."""
    return [f"{a}/p2p/{host.get_id()}" for a in dialable_addrs(host)]


async def open_stream(
    host: IHost, peer_id: ID, protocols: Sequence[TProtocol], timeout_s: float = STREAM_OPEN_TIMEOUT_S
) -> INetStream:
    """``host.new_stream`` with a deadline; TransportError if it fails or takes longer than ``timeout_s``."""
    try:
        with trio.fail_after(timeout_s):
            return await host.new_stream(peer_id, list(protocols))
    except trio.TooSlowError:
        raise TransportError(f"opening {protocols[0]} to {peer_id} took more than {timeout_s}s") from None
    except trio.Cancelled:
        raise
    except Exception as exc:
        raise TransportError(f"cannot open {protocols[0]} to {peer_id}: {exc}") from exc


async def connect(host: IHost, info: PeerInfo, timeout_s: float = STREAM_OPEN_TIMEOUT_S) -> None:
    """``host.connect`` with a deadline (trio.TooSlowError), past the swarm's negative dial cache (see above):
    the caller's dial is deliberate and paced by its own backoff."""
    network = host.get_network()
    unblock = getattr(network, "unblock_peer", None)
    if unblock is not None:
        unblock(info.peer_id)
    with trio.fail_after(timeout_s):
        await host.connect(info)


async def close_hosts(hosts: Iterable[IHost]) -> None:
    """Close hosts concurrently (listeners, connections, background tasks)."""
    async with trio.open_nursery() as nursery:
        for host in hosts:
            nursery.start_soon(host.close)
