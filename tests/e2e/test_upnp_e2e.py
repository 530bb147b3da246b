"""UPnP port mapping (``nat.upnp``) against a real IGD: Debian's miniupnpd in the lab's router namespaces
(pangea_p2p/netlab.py), peers as real processes. Skipped, with the reason, where namespaces, nftables or
miniupnpd are missing.

- A home peer behind a router running miniupnpd finds it by SSDP, maps its TCP port, announces the router's
  address, is found public by AutoNAT, is dialed there by a public peer (no relay) and runs its tasks; the
  mapping is renewed before its lease ends and removed when the peer stops. A second home peer, whose IGD
  refuses every mapping, says so once and carries on through a relay.
- Where the router's own public address is a reserved one (the lab's default 10.77.x: a double NAT, as far as
  miniupnpd can tell), the IGD offers no external address: nothing is mapped or announced; a home network
  without any IGD gives one log line; both home peers are private and use relays.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path

import pytest

from pangea_p2p import netlab as netns
from tests.e2e.nodeproc import NodeProcess
from tests.e2e.test_nat_e2e import FAST, RELAY_ONLY, Peer, adverts, bench_job, poll, wait_done, workers_of

pytestmark = pytest.mark.slow

WHY_NOT = netns.unavailable() or netns.upnp_unavailable()
WAN = "77.77"  # a public (non-reserved) range, only ever inside the test's namespaces: miniupnpd maps only there
LEASE_S = 20  # the nat.upnp_lease_s minimum: renewed every 10 s, so the test sees a renewal


@contextmanager
def lab_with_peers(base: Path, wan: str) -> Iterator[tuple[netns.NatLab, ExitStack, list[NodeProcess]]]:
    with ExitStack() as stack:
        lab = stack.enter_context(netns.NatLab(homes=2, wan=wan))
        procs: list[NodeProcess] = []
        stack.callback(lambda: [p.kill() for p in procs])
        yield lab, stack, procs


def start(lab: netns.NatLab, procs: list[NodeProcess], base: Path, ns: str, name: str, listen: list[str],
          *args: str) -> Peer:
    listen_args = [a for addr in listen for a in ("--listen", addr)]
    proc = NodeProcess(base / name, *listen_args, "--api-port", "0", "--set", f"api.host={lab.mgmt_ip(ns)}",
                       "--set", "api.allow_remote=true", *FAST, *args, prefix=tuple(lab.prefix(ns)))
    procs.append(proc)
    return Peer(lab, ns, proc)


def logged_at(peer: Peer, needle: str) -> float:
    """When ``peer`` first logged a line containing ``needle`` (its own timestamp, seconds)."""
    line = next(x for x in peer.proc.stderr if needle in x)
    return datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()


def upnp_lines(peer: Peer) -> list[str]:
    return [line for line in peer.proc.stderr if " nat.upnp " in line]


@pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "")
def test_home_peer_maps_its_port_on_the_router_and_is_dialed_directly(tmp_path: Path) -> None:
    with lab_with_peers(tmp_path, WAN) as (lab, _, procs):
        lab.start_miniupnpd(1, tmp_path / "igd1")
        lab.start_miniupnpd(2, tmp_path / "igd2", allow=False)  # an IGD that refuses every mapping
        r0 = start(lab, procs, tmp_path, lab.pub, "r0", [f"/ip4/{lab.pub_ip(n)}/tcp/4001" for n in (1, 2)],
                   *RELAY_ONLY)
        boot = {n: next(a for a in r0.addrs if f"/{lab.pub_ip(n)}/" in a) for n in (1, 2)}
        started = time.monotonic()
        upnp = ["--set", "nat.upnp=true", "--set", f"nat.upnp_lease_s={LEASE_S}"]
        h1, h2 = (start(lab, procs, tmp_path, lab.home(n), f"h{n}", [f"/ip4/{lab.home_ip(n)}/tcp/4001"],
                        "--bootstrap", boot[n], "--set", "capacity.task_slots=1", *upnp, *extra)
                  for n, extra in ((1, []), (2, RELAY_ONLY)))  # h2 takes no task either
        external = f"/ip4/{lab.router_ip(1)}/tcp/4001"

        poll("h1's mapping", lambda: h1.get("health")["nat"]["upnp"]["external_addrs"] == [external], 30)
        mapped_s = time.monotonic() - started
        assert lab.upnp_mappings(1) == [f"4001 {lab.home_ip(1)}:4001"]
        poll("h1 found public by AutoNAT", lambda: h1.get("health")["nat"]["reachability"] == "public", 60)
        public_s = time.monotonic() - started
        at = {what: logged_at(h1, needle) for what, needle in (
            ("started", "peer.started"), ("mapped", "nat.upnp state=mapped"), ("public", "reachability=public"))}
        print(f"h1: mapped {mapped_s:.1f}s, public {public_s:.1f}s after the process started; after peer.started: "
              f"mapped {at['mapped'] - at['started']:.2f}s, public {at['public'] - at['started']:.2f}s")

        def announced() -> bool:  # r0's directory: h1 with the router's address first and no relay address
            ad = adverts(r0).get(h1.peer_id, {})
            return ad.get("addrs", [""])[0] == external and ad["reachability"] == "public" and not ad["relay_addrs"]
        poll("h1's advert with its mapped address", announced, 60)
        # no AutoNAT probe before the first mapping attempt: h1 was never private, never took a relay
        assert not [x for x in h1.proc.stderr if "reachability=private" in x or "relays=['" in x]

        # the IGD of h2 refuses: one log line, no address announced, private, a reservation on r0
        poll("h2 private with a relay", lambda: h2.get("health")["nat"]["relays"] == [r0.peer_id]
             and h2.get("health")["nat"]["upnp"]["state"] != "starting", 60)
        nat2 = h2.get("health")["nat"]
        assert (nat2["reachability"], nat2["upnp"]["state"], nat2["upnp"]["external_addrs"]) == (
            "private", "refused", [])
        assert len(upnp_lines(h2)) == 1, upnp_lines(h2)
        assert "refused" in upnp_lines(h2)[0]
        assert lab.upnp_mappings(2) == []

        # a public peer that knows only h1's mapped address dials it there: a direct connection, no relay
        p2 = start(lab, procs, tmp_path, lab.pub, "p2", [f"/ip4/{lab.pub_ip(1)}/tcp/4002"], "--bootstrap",
                   f"{external}/p2p/{h1.peer_id}", "--set", "capacity.task_slots=1")
        poll("p2 connected to h1", lambda: p2.get("health")["nat"]["links"].get(h1.peer_id) == "direct", 30)
        poll("h1 in p2's directory", lambda: h1.peer_id in adverts(p2), 60)
        with p2.client() as client:  # r0 and h2 cannot take the job's tasks (fuel): those leaving p2 go to h1
            job = bench_job()
            handle = job.submit(4, client)
            wait_done(client, handle, 120)
            assert handle.outputs() == job.run_local(4)
            assert handle.verify().ok
            assert workers_of(client, handle.job_id) == {h1.peer_id}, client.explain(handle.job_id)
        assert p2.get("health")["nat"]["links"][h1.peer_id] == "direct"

        # the lease is renewed (every LEASE_S / 2) and the mapping outlives its first lease
        poll("a renewal", lambda: h1.get("health")["nat"]["upnp"]["renewals"] >= 1, LEASE_S + 10)
        assert lab.upnp_mappings(1) == [f"4001 {lab.home_ip(1)}:4001"]
        assert len(upnp_lines(h1)) == 1, upnp_lines(h1)

        h1.proc.stop()  # SIGTERM: the peer deletes its mapping on the way out
        assert lab.upnp_mappings(1) == []
        assert any("nat.upnp_unmapped" in line for line in h1.proc.stderr), h1.proc.stderr[-5:]


@pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "")
def test_no_usable_gateway_falls_back_to_relays(tmp_path: Path) -> None:
    with lab_with_peers(tmp_path, "10.77") as (lab, _, procs):  # reserved: miniupnpd sees a double NAT
        lab.start_miniupnpd(1, tmp_path / "igd1")  # h2's network has no IGD at all
        r0 = start(lab, procs, tmp_path, lab.pub, "r0", [f"/ip4/{lab.pub_ip(n)}/tcp/4001" for n in (1, 2)],
                   *RELAY_ONLY)
        boot = {n: next(a for a in r0.addrs if f"/{lab.pub_ip(n)}/" in a) for n in (1, 2)}
        h1, h2 = (start(lab, procs, tmp_path, lab.home(n), f"h{n}", [f"/ip4/{lab.home_ip(n)}/tcp/4001"],
                        "--bootstrap", boot[n], "--set", "nat.upnp=true") for n in (1, 2))
        for peer, state in ((h1, "unusable"), (h2, "no-gateway")):
            poll(f"{state}: private with a relay, advertised", lambda peer=peer: peer.get("health")["nat"][
                "relays"] == [r0.peer_id] and bool(adverts(r0).get(peer.peer_id, {}).get("relay_addrs")), 60)
            poll(f"{state}: the search for a gateway over", lambda peer=peer: upnp_lines(peer) != [], 30)
            print(f"{state}: {upnp_lines(peer)[0]}")
            nat = peer.get("health")["nat"]
            assert (nat["reachability"], nat["upnp"]["state"], nat["upnp"]["external_addrs"]) == (
                "private", state, []), nat
            assert len(upnp_lines(peer)) == 1, upnp_lines(peer)
            ad = adverts(r0)[peer.peer_id]
            assert not any(a.startswith(f"/ip4/{lab.router_ip(1)}/") for a in ad["addrs"]), ad["addrs"]
        assert "double NAT" in upnp_lines(h1)[0]
        assert "no UPnP gateway" in upnp_lines(h2)[0]
        assert lab.upnp_mappings(1) == []
