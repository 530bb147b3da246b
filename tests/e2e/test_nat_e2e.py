"""Peers behind NAT, in network namespaces the test creates and removes (pangea_p2p/netlab.py).

A public network holds two relay peers (the first is also the bootstrap); two home networks each sit behind
their own NAT router (nftables masquerade) with one peer. The relays cannot take the test's tasks (their fuel
limit is below the job's), so every task that leaves the submitting home peer goes to the other home peer,
which it can reach only through a relay. Skipped, with the reason, where namespaces or nftables are missing.
"""

from __future__ import annotations

import signal
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from pangea_p2p import netlab as netns
from pangea_p2p.sdk.client import Client, read_api_token
from pangea_p2p.sdk.job import Job, JobHandle, Limits
from tests.e2e.nodeproc import NodeProcess

pytestmark = pytest.mark.slow

WHY_NOT = netns.unavailable()
FAST = ["--set", "capacity.advert_interval_s=1", "--set", "dht.bootstrap_retry_s_min=0.2",
        "--set", "coordinator.unreachable_cooldown_s=2"]
BENCH_ROUNDS = 100_000_000  # well under a second of the `bench` guest
LIMITS = Limits(fuel_max=10**10)
RELAY_ONLY = ["--set", "compute.fuel_max=1000000000"]  # below the job's fuel: the relays take no task


def poll(what: str, check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)  # polling other processes' HTTP APIs


class Peer:
    def __init__(self, lab: netns.NatLab, ns: str, proc: NodeProcess) -> None:
        self.proc = proc
        self.addrs = proc.addrs()
        self.peer_id = self.addrs[0].rsplit("/p2p/", 1)[1]
        port = next(x for x in proc.stdout if x.startswith("api on ")).rsplit(":", 1)[1]
        self.api = f"{lab.mgmt_ip(ns)}:{port}"

    def client(self) -> Client:
        # allow_remote is on (the API is reached over the lab's management link): every request needs the token
        return Client(self.api, read_api_token(self.proc.data_dir), timeout_s=60)

    def get(self, what: str) -> Any:
        with self.client() as c:
            return getattr(c, what)()


@contextmanager
def nat_network(base: Path, relays: int = 2, h1_punches: bool = True) -> Iterator[tuple[netns.NatLab, list[Peer]]]:
    """Relays r0 (and r1) in the public namespace; home peers h1, h2 behind their NATs (``h1_punches``: h1 runs
    DCUtR). Yields (lab, [r0, (r1,) h1, h2])."""
    with ExitStack() as stack:
        lab = stack.enter_context(netns.NatLab(homes=2))
        procs: list[NodeProcess] = []
        stack.callback(lambda: [p.kill() for p in procs])

        def start(ns: str, name: str, listen: list[str], *args: str) -> Peer:
            listen_args = [a for addr in listen for a in ("--listen", addr)]
            proc = NodeProcess(base / name, *listen_args, "--api-port", "0", "--set", f"api.host={lab.mgmt_ip(ns)}",
                               "--set", "api.allow_remote=true", *FAST, *args, prefix=tuple(lab.prefix(ns)))
            procs.append(proc)
            return Peer(lab, ns, proc)

        listen = [f"/ip4/{lab.pub_ip(n)}/tcp/{{port}}" for n in (1, 2)]
        r0 = start(lab.pub, "r0", [a.format(port=4001) for a in listen], *RELAY_ONLY)
        boot = {n: next(a for a in r0.addrs if f"/{lab.pub_ip(n)}/" in a) for n in (1, 2)}
        others = [start(lab.pub, f"r{i}", [a.format(port=4001 + i) for a in listen], "--bootstrap", boot[1],
                        *RELAY_ONLY) for i in range(1, relays)]
        punch = {1: h1_punches, 2: True}
        homes = [start(lab.home(n), f"h{n}", [f"/ip4/{lab.home_ip(n)}/tcp/4001"], "--bootstrap", boot[n],
                       "--set", "capacity.task_slots=1", "--set", f"nat.hole_punching={str(punch[n]).lower()}")
                 for n in (1, 2)]
        yield lab, [r0, *others, *homes]


def adverts(peer: Peer) -> dict[str, dict[str, Any]]:
    return {a["peer_id"]: a for a in peer.get("capacity")["adverts"]}


def bench_job() -> Job[int]:
    job: Job[int] = Job("bench", guest="bench", verification="spot:1", limits=LIMITS)
    job.split(lambda n: [struct.pack("<I", BENCH_ROUNDS + i) for i in range(n)])
    job.merge(lambda outputs: outputs)
    return job


def workers_of(client: Client, job_id: str) -> set[str]:
    """The peers the job's tasks were sent to (from the job's explanation)."""
    sent = set()
    for reasons in (t["reasons"] for t in client.explain(job_id, done=True)["tasks"].values()):
        sent.update(r.split()[2] for r in reasons if r.startswith("sent to "))
    return sent


def wait_done(client: Client, handle: JobHandle[Any], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    status = client.job(handle.job_id)
    while status["state"] == "running":
        assert time.monotonic() < deadline, client.explain(handle.job_id)
        status = client.wait_job(handle.job_id, status["version"], 5.0)
    assert status["state"] == "done", client.explain(handle.job_id)


@pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "")
def test_home_peers_behind_nat_work_through_relays(tmp_path: Path) -> None:
    # h1 runs no DCUtR here, so the two home peers stay on a relayed connection (see the next test for the
    # hole punch)
    with nat_network(tmp_path, relays=2, h1_punches=False) as (_, peers):
        r0, r1, h1, h2 = peers
        relay_ids = {r0.peer_id, r1.peer_id}
        # reachability: relays public (dialed back by the home peers), home peers private (their routers'
        # address is not theirs); each home peer holds reservations on both relays and advertises them
        poll("every peer's reachability", lambda: [p.get("health")["nat"]["reachability"] for p in peers] == [
            "public", "public", "private", "private"], 90)
        poll("the home peers' relay reservations",
             lambda: all(set(h.get("health")["nat"]["relays"]) == relay_ids for h in (h1, h2)), 60)
        def sees_everyone(peer: Peer) -> bool:
            ads = adverts(peer)
            homes_ok = all(
                h.peer_id in ads and ads[h.peer_id]["reachability"] == "private"
                and {a.split("/p2p/")[1].split("/")[0] for a in ads[h.peer_id]["relay_addrs"]} == relay_ids
                for h in (h1, h2))
            relays_ok = all(r.peer_id in ads and ads[r.peer_id]["reachability"] == "public"
                            and ads[r.peer_id]["relay_slots_free"] > 0 for r in (r0, r1))
            return homes_ok and relays_ok

        for peer in peers:  # every directory lists every peer, the home peers with their relay addresses
            poll(f"the directory of {peer.peer_id}", lambda peer=peer: sees_everyone(peer), 60)
        assert h1.peer_id not in h2.get("health")["nat"]["links"]  # not yet connected to each other

        # a job submitted at h2: its tasks that leave h2 can only go to h1, reached through a relay
        with h2.client() as client:
            job = bench_job()
            handle = job.submit(4, client)
            wait_done(client, handle, 180)
            assert handle.outputs() == job.run_local(4)
            assert handle.verify().ok
            assert h1.peer_id in workers_of(client, handle.job_id), client.explain(handle.job_id)
        assert h2.get("health")["nat"]["links"][h1.peer_id] == "relayed"

        # a relay stops mid-job: the tasks it carried are sent again through the other relay; none is lost
        with h1.client() as client:
            job = bench_job()
            handle = job.submit(6, client)
            poll("a task sent to h2", lambda: h2.peer_id in workers_of(client, handle.job_id), 60)
            first_relay = min(relay_ids)  # h2 dials h1's circuit addresses in order: the first relay's first
            victim = r0 if r0.peer_id == first_relay else r1
            victim.proc.stop(signal.SIGKILL)
            wait_done(client, handle, 240)
            assert handle.outputs() == job.run_local(6)
            assert handle.verify().ok


@pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "")
def test_two_home_peers_punch_a_hole_through_their_nats(tmp_path: Path) -> None:
    with nat_network(tmp_path, relays=1) as (_, [_, h1, h2]):
        poll("h1's relay addresses in h2's directory", lambda: bool(adverts(h2).get(h1.peer_id, {}).get(
            "relay_addrs")), 90)
        with h2.client() as client:  # the first task opens a relayed connection to h1; DCUtR upgrades it
            job = bench_job()
            handle = job.submit(2, client)
            wait_done(client, handle, 120)
            assert handle.outputs() == job.run_local(2)
            assert handle.verify().ok
        poll("a hole-punched connection", lambda: h2.get("health")["nat"]["links"].get(h1.peer_id) == "hole-punched",
             30)
