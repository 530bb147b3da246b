"""Compute behaviours back to back, as h11's ConnectionPair tests two connections: every message between peers
goes through the real wire codec (encode, then decode at the other end), each peer's ``Execute`` is answered
by a fake sandbox the test controls, and time moves only when a test says so. What is checked is the protocol
of one peer against another: the worker side's lifecycle (accept delay, commit-then-reveal, cancel, an issuer
that goes away, bad inputs, splitting) and what the issuer makes of it."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field, replace

import pytest

from pangea_p2p.core.capacity import CapacityAdvert, LocalCapacity
from pangea_p2p.core.chunks import frame_chunks, unframe_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.jobs import codec
from pangea_p2p.core.jobs.admission import STRIKES_MAX, AdmissionConfig
from pangea_p2p.core.jobs.behaviour import ComputeBehaviour, JobRun
from pangea_p2p.core.jobs.context import BehaviourConfig, ComputeContext
from pangea_p2p.core.jobs.events import (
    Abort,
    Action,
    Event,
    Execute,
    Executed,
    Fetch,
    Fetched,
    FetchFailed,
    FromIssuer,
    FromWorker,
    IssuerLost,
    Log,
    Malformed,
    ProofReceived,
    PublishProof,
    Purpose,
    Reply,
    SendToWorker,
    SubmitJob,
    Tick,
)
from pangea_p2p.core.jobs.model import JobSpec, JobState, VerificationPolicy
from pangea_p2p.core.jobs.scheduler import SchedulerConfig, WorkerView
from pangea_p2p.core.jobs.serving import FETCH_WAIT_S, Incoming, Serving
from pangea_p2p.core.trust import Outcome
from pangea_p2p.core.verify.binding import ReceiptLimits
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.execution import issue_receipt
from pangea_p2p.core.verify.fraud import FraudProof
from pangea_p2p.core.verify.receipts import ReceiptTree
from pangea_p2p.core.verify.tree import verify_tree
from pangea_p2p.errors import ConfigError, FailureKind, LocalProtocolError
from tests.core.jobs.coord_driver import ident

T0 = 1_000.0
MODULE_CID = cid_of(b"a module")
LIMITS = ReceiptLimits(fuel_max=10**9, memory_bytes_max=64 << 20, wall_time_s=10.0, output_bytes_max=1 << 20)


def sha(chunk: bytes) -> bytes:
    return hashlib.sha256(chunk).digest()


class Store:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, cid: str) -> bytes | None:
        return self.data.get(cid)

    def has(self, cid: str) -> bool:
        return cid == MODULE_CID or cid in self.data

    def put(self, data: bytes, *, persist: bool = False, cid: str | None = None) -> str:
        cid = cid or cid_of(data)
        self.data[cid] = data
        return cid


@dataclass
class Peer:
    name: str
    behaviour: ComputeBehaviour
    store: Store
    runs: list[Execute] = field(default_factory=list)  # Execute actions not answered yet
    aborted: set[int] = field(default_factory=set)
    auto_run: bool = True  # answer every Execute at once with sha256 of each chunk
    log: bytes = b""  # what its runs print
    logs: list[Log] = field(default_factory=list)  # the Log actions it produced

    @property
    def peer_id(self) -> str:
        return self.behaviour.self_id


@dataclass
class Net:
    """Peers whose messages cross the wire codec; ``wire`` records (sender, receiver, message)."""

    now: float = T0
    peers: dict[str, Peer] = field(default_factory=dict)
    wire: list[tuple[str, str, codec.Message]] = field(default_factory=list)
    queue: list[tuple[Peer, Event]] = field(default_factory=list)
    lose: tuple[type, ...] = ()  # messages of these kinds are lost on the way
    published: list[tuple[str, bytes]] = field(default_factory=list)  # fraud proofs: (publisher, proof)

    def add(self, name: str, *, slots: int = 2, memory_bytes_max: int = 1 << 30, accept_delay_s: float = 0.5,
            split_above_s: float = 30.0) -> Peer:
        admission = AdmissionConfig(slots=slots, queue_max=2, speed_fuel_per_s=1e9,
                                    limits_max=ReceiptLimits(10**12, memory_bytes_max, 300.0, 1 << 30))
        config = BehaviourConfig(worker=admission, split=SchedulerConfig(split_above_s=split_above_s),
                                 accept_delay_s=accept_delay_s)
        peer = Peer(name, None, Store())  # type: ignore[arg-type]
        peer.behaviour = ComputeBehaviour(ComputeContext(ident(name), peer.store, lambda now: self.views(peer, now),
                                                         random.Random(name), config))
        self.peers[peer.peer_id] = peer
        return peer

    def views(self, me: Peer, now: float) -> list[WorkerView]:
        out = []
        for p in self.peers.values():
            if p is me:
                continue
            cap = LocalCapacity(cores=2, memory_free_bytes=1 << 30, task_slots_total=2, task_slots_free=2,
                                speed_fuel_per_s=1e9, fuel_max=10**12, memory_bytes_max=1 << 30,
                                wall_time_s_max=300.0, software_version="test")
            advert = CapacityAdvert(p.peer_id, 1, now, now + 30, cap, b"")
            out.append(WorkerView.from_advert(advert, me.behaviour.trust.score(p.peer_id, now), 0.001,
                                              me.behaviour.inflight.get(p.peer_id, 0)))
        return out

    def submit(self, peer: Peer, chunks: list[bytes], policy: str = "hash", per_task: int = 1) -> JobRun:
        cids = tuple(peer.store.put(c) for c in chunks)
        spec = JobSpec(job_id="job", module_cid=MODULE_CID, chunk_cids=cids, chunk_sizes=tuple(map(len, chunks)),
                       limits=LIMITS, chunks_per_task=per_task, verification=VerificationPolicy.parse(policy))
        self.handle(peer, SubmitJob(spec))
        return peer.behaviour.jobs["job"]

    def handle(self, peer: Peer, event: Event) -> None:
        """``event`` at ``peer``, and everything it sets off, until nothing moves."""
        self.queue.append((peer, event))
        for _ in range(10_000):
            if not self.queue:
                return
            target, ev = self.queue.pop(0)
            self._do(target, target.behaviour.handle(self.now, ev))
            target.behaviour.check()
        raise AssertionError("the network never settled")

    def tick(self, now: float) -> None:
        self.now = now
        for peer in list(self.peers.values()):
            deadline = peer.behaviour.next_deadline()
            if deadline is not None and deadline <= now:
                self.handle(peer, Tick())

    def finish_runs(self, peer: Peer) -> None:
        runs, peer.runs = peer.runs, []
        for act in runs:
            if act.request not in peer.aborted:
                self.handle(peer, self._executed(peer, act))

    def _executed(self, peer: Peer, act: Execute) -> Executed:
        return Executed(act.request, [sha(c) for c in act.chunks], None, 1000 * len(act.chunks), peer.log)

    def _do(self, peer: Peer, actions: list[Action]) -> None:
        for act in actions:
            if isinstance(act, SendToWorker):
                self._send(peer, act.worker, act.message, lambda p, m, f=peer: FromIssuer(f.peer_id, 1, m))
            elif isinstance(act, Reply):
                self._send(peer, act.issuer, act.message, lambda p, m, f=peer: FromWorker(f.peer_id, m))
            elif isinstance(act, Execute):
                if peer.auto_run or act.purpose is not Purpose.SERVE:
                    self.queue.append((peer, self._executed(peer, act)))
                else:
                    peer.runs.append(act)
            elif isinstance(act, Abort):
                peer.aborted.add(act.request)
            elif isinstance(act, Log):
                peer.logs.append(act)
            elif isinstance(act, PublishProof):  # gossip: to every other peer
                self.published.append((peer.name, act.data))
                others = [p for p in self.peers.values() if p is not peer]
                self.queue.extend((p, ProofReceived(peer.peer_id, act.data)) for p in others)
            elif isinstance(act, Fetch):  # from the peers named
                data = next((d for p in act.peers if (d := self.peers[p].store.get(act.cid)) is not None), None)
                self.queue.append((peer, FetchFailed(act.request, "nobody has it") if data is None
                                   else Fetched(act.request, data)))

    def _send(self, sender: Peer, to: str, msg: codec.Message, event: object) -> None:
        decoded = codec.decode(codec.encode(msg))  # the real codec, both ways
        if isinstance(decoded, self.lose):
            return
        self.wire.append((sender.name, self.peers[to].name, decoded))
        self.queue.append((self.peers[to], event(self.peers[to], decoded)))  # type: ignore[operator]

    def sent(self, kind: type, by: str | None = None) -> list[codec.Message]:
        return [m for s, _, m in self.wire if isinstance(m, kind) and (by is None or s == by)]


def pair(**worker: object) -> tuple[Net, Peer, Peer]:
    """A submitter that cannot run the job's tasks itself (too little memory), and one worker."""
    net = Net()
    return net, net.add("submitter", memory_bytes_max=16 << 20), net.add("worker", **worker)  # type: ignore[arg-type]


def test_an_offer_and_its_result_cross_the_codec_and_the_job_is_done() -> None:
    net, sub, _ = pair()
    run = net.submit(sub, [b"one", b"two"])
    assert run.state is JobState.DONE
    outputs = [unframe_chunks(sub.store.data[t.output_cid]) for t in run.tasks()]
    assert outputs == [[sha(b"one")], [sha(b"two")]]
    assert len(net.sent(codec.Offer)) == 2
    assert net.sent(codec.Accepted) == []  # answered at once: the result stands for the acceptance
    for t in run.tasks():  # each result verifies offline against what the submitter asked
        tree = ReceiptTree.decode(t.tree, VerifyConfig())
        verify_tree(tree, t.ref.binding(), net.now, VerifyConfig(), worker=t.worker,
                    output=sub.store.data[t.output_cid])


def test_task_accepted_goes_out_only_for_a_task_still_running_after_the_accept_delay() -> None:
    net, sub, worker = pair()
    worker.auto_run = False
    run = net.submit(sub, [b"slow"])
    assert net.sent(codec.Accepted) == []
    assert worker.behaviour.next_deadline() == pytest.approx(T0 + 0.5)
    net.tick(T0 + 0.499)
    assert net.sent(codec.Accepted) == []
    net.tick(T0 + 0.5)
    assert [m.task_id for m in net.sent(codec.Accepted)] == ["job/t0"]
    net.finish_runs(worker)
    assert run.state is JobState.DONE


def test_commit_then_reveal_between_three_workers() -> None:
    net = Net()
    sub = net.add("submitter", memory_bytes_max=16 << 20)
    for name in ("a", "b", "c"):
        net.add(name)
    run = net.submit(sub, [b"vote"], policy="replicas:3")
    assert run.state is JobState.DONE
    commitments, results = net.sent(codec.Commitment), net.sent(codec.Result)
    assert len(commitments) == len(results) == 3
    first_result = min(i for i, (_, _, m) in enumerate(net.wire) if isinstance(m, codec.Result))
    last_commitment = max(i for i, (_, _, m) in enumerate(net.wire) if isinstance(m, codec.Commitment))
    assert last_commitment < first_result  # nobody revealed before every replica had committed
    assert all(r.nonce for r in results if isinstance(r, codec.Result))
    assert run.task("job/t0").checked


def test_a_committed_result_waits_for_its_reveal_request_then_gives_up() -> None:
    net = Net(lose=(codec.RevealRequest, codec.Cancel))  # cut off from its issuer, which never asks nor cancels
    sub = net.add("submitter", memory_bytes_max=16 << 20)
    workers = [net.add(n) for n in ("a", "b", "c")]
    run = net.submit(sub, [b"x"], policy="replicas:3")
    assert len(net.sent(codec.Commitment)) == 3
    assert net.sent(codec.Result) == []
    for w in workers:
        assert w.behaviour.serving("job/t0") is not None
        assert w.behaviour.admission.free_slots() == 2  # a committed result holds no slot
        assert w.behaviour.next_deadline() == pytest.approx(T0 + 600.0)  # reveal_wait_s_max
    net.tick(T0 + 599.0)
    assert net.sent(codec.Rejected) == []
    net.tick(T0 + 600.0)
    refusals = [m for m in net.sent(codec.Rejected) if isinstance(m, codec.Rejected)]
    assert len(refusals) == 3
    assert all("no reveal request within 600 s" in r.reason for r in refusals)
    assert all(w.behaviour.serving("job/t0") is None for w in workers)
    assert run.state is not JobState.DONE  # the issuer never heard a reveal: nothing accepted


def test_a_worker_logs_each_served_task_from_acceptance_to_its_result() -> None:
    net, sub, worker = pair()
    worker.auto_run = False
    net.submit(sub, [b"slow", b"fails"])
    ok, bad = worker.runs
    worker.runs = []
    net.now = T0 + 2.5
    net.handle(worker, net._executed(worker, ok))
    net.handle(worker, Executed(bad.request, None, FailureKind.OUT_OF_FUEL, 777))
    by_task: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for entry in worker.logs:
        fields = dict(entry.fields)
        by_task.setdefault(fields.pop("task"), []).append((entry.event, fields))
    issuer = sub.peer_id
    assert by_task["job/t0"] == [
        ("task.accepted", {"issuer": issuer, "job": "job", "verdict": "run"}),
        ("task.running", {"issuer": issuer}),
        ("task.done", {"fuel": "1000", "time_s": "2.500000"}),
        ("task.result_sent", {"issuer": issuer, "bytes": str(len(frame_chunks([sha(b"slow")])))}),
    ]
    first_try = [e for e, _ in by_task["job/t1"]][:4]  # then the submitter offers it again (more fuel)
    assert first_try == ["task.accepted", "task.running", "task.failed", "task.result_sent"]
    assert by_task["job/t1"][2][1] == {"failure": "out_of_fuel", "fuel": "777", "time_s": "2.500000"}
    assert all(entry.level == "info" for entry in worker.logs)


def test_a_cancel_aborts_the_run_and_its_late_outcome_is_ignored() -> None:
    net, sub, worker = pair()
    worker.auto_run = False
    net.submit(sub, [b"x"])
    (run,) = worker.runs
    net.handle(worker, FromIssuer(sub.peer_id, 1, codec.Cancel("job/t0")))
    assert run.request in worker.aborted
    assert (worker.logs[-1].event, dict(worker.logs[-1].fields)) == (
        "task.dropped", {"task": "job/t0", "why": "cancelled by the issuer"})
    assert worker.behaviour.serving("job/t0") is None
    assert worker.behaviour.admission.free_slots() == 2
    results_before = len(net.sent(codec.Result))
    net.handle(worker, net._executed(worker, run))  # the sandbox answers anyway
    assert len(net.sent(codec.Result)) == results_before


def test_an_issuer_that_goes_away_takes_its_tasks_with_it() -> None:
    net, sub, worker = pair()
    worker.auto_run = False
    net.submit(sub, [b"x", b"y"])
    assert len(worker.runs) == 2
    net.handle(worker, IssuerLost(sub.peer_id, 2))  # another stream of that issuer: not these tasks
    assert worker.aborted == set()
    net.handle(worker, IssuerLost(sub.peer_id, 1))
    assert worker.aborted == {r.request for r in worker.runs}
    assert worker.behaviour.issuers() == set()


@pytest.mark.parametrize(("bad_input", "chunk_count", "why"), [
    (True, 1, "does not match"),  # inline input that is not the content it names
    (False, 2, "does not hold the 2 chunks"),  # the input holds one chunk, the offer says two
])
def test_an_offer_whose_input_is_not_what_it_says_is_refused(bad_input: bool, chunk_count: int, why: str) -> None:
    net, sub, worker = pair()
    data = frame_chunks([b"x"])
    ref = replace(net.submit(sub, [b"x"]).task("job/t0").ref, task_id="job/t9", chunk_count=chunk_count)
    net.handle(worker, FromIssuer(sub.peer_id, 1, codec.Offer(ref, data + b"!" if bad_input else data)))
    (refusal,) = [m for m in net.sent(codec.Rejected, by="worker") if m.task_id == "job/t9"]
    assert isinstance(refusal, codec.Rejected)
    assert why in refusal.reason
    assert worker.behaviour.admission.free_slots() == 2


def test_a_malformed_frame_costs_its_sender_trust() -> None:
    net, sub, worker = pair()
    net.handle(sub, Malformed(worker.peer_id, "compute message of no known kind"))
    record = sub.behaviour.trust.get(worker.peer_id)
    assert record is not None
    assert record.invalid == 1


def test_a_served_task_moves_only_along_its_state_machine() -> None:
    net, sub, worker = pair()
    worker.auto_run = False
    net.submit(sub, [b"x"])
    inc = worker.behaviour.serving("job/t0")
    assert isinstance(inc, Incoming)
    assert inc.state is Serving.RUNNING
    with pytest.raises(LocalProtocolError, match="running -> fetching"):
        inc.move(Serving.FETCHING)
    with pytest.raises(LocalProtocolError, match="running -> splitting"):
        inc.move(Serving.SPLITTING)


def test_a_worker_splits_a_big_task_and_answers_with_a_delegation_over_its_parts_and_their_logs() -> None:
    net = Net()
    sub = net.add("submitter", memory_bytes_max=16 << 20)
    front = net.add("front", split_above_s=0.001)  # any task with several chunks is big for it
    helpers = [net.add(n) for n in ("h1", "h2")]
    for h in helpers:
        h.log = f"printed by {h.name}\n".encode()
    chunks = [f"chunk {i}".encode() for i in range(4)]
    run = net.submit(sub, chunks, per_task=4)
    assert run.state is JobState.DONE, run.explain()
    task = run.task("job/t0")
    assert task.worker == front.peer_id
    assert unframe_chunks(sub.store.data[task.output_cid]) == [sha(c) for c in chunks]
    tree = ReceiptTree.decode(task.tree, VerifyConfig())
    assert len(tree.children) >= 2  # front signed for the parts the helpers ran
    verified = verify_tree(tree, task.ref.binding(), net.now, VerifyConfig(), worker=front.peer_id,
                           output=sub.store.data[task.output_cid])
    assert verified.signers == {front.peer_id, *(h.peer_id for h in helpers)}
    log = sub.behaviour.task_logs.get("job/t0")
    assert log is not None
    assert b"printed by h1" in log.log
    assert b"printed by h2" in log.log  # the parts' logs went up with the merged result


def test_the_issuer_keeps_the_log_each_task_printed() -> None:
    net, sub, worker = pair()
    worker.log = b"hello from the guest\n"
    net.submit(sub, [b"x"])
    entry = sub.behaviour.task_logs.get("job/t0")
    assert entry is not None
    assert (entry.worker, entry.log) == (worker.peer_id, b"hello from the guest\n")


def test_a_liar_among_replicas_loses_trust_at_the_submitter() -> None:
    net = Net()
    sub = net.add("submitter", memory_bytes_max=16 << 20)
    liar = net.add("liar")
    for name in ("a", "b"):
        net.add(name)
    original = net._executed

    def lie(peer: Peer, act: Execute) -> Executed:
        ev = original(peer, act)
        if peer is liar and ev.outputs:
            return Executed(ev.request, [b"wrong" * 4], None, ev.fuel_used)
        return ev

    net._executed = lie  # type: ignore[method-assign]
    run = net.submit(sub, [b"vote"], policy="replicas:3")
    assert run.state is JobState.DONE
    assert unframe_chunks(sub.store.data[run.task("job/t0").output_cid]) == [sha(b"vote")]
    honest = next(p for p in net.peers.values() if p.name == "a")
    assert sub.behaviour.trust.score(liar.peer_id, net.now) < 0 < sub.behaviour.trust.score(honest.peer_id, net.now)


def test_offers_whose_blocks_nobody_serves_give_the_slot_back_within_seconds_and_cost_the_offerer() -> None:
    net, sub, worker = pair()
    hostile = net.add("hostile")
    ref = net.submit(sub, [b"x"]).task("job/t0").ref
    fetches: list[tuple[int, str]] = []
    real_do = net._do

    def do(peer: Peer, actions: list[Action]) -> None:  # the worker's fetches go nowhere: nobody answers
        fetches.extend((a.request, a.cid) for a in actions if isinstance(a, Fetch) and peer is worker)
        real_do(peer, [a for a in actions if not (isinstance(a, Fetch) and peer is worker)])

    net._do = do  # type: ignore[method-assign]
    for k in range(STRIKES_MAX):
        offer = replace(ref, task_id=f"evil/t{k}", job_id="evil", issuer=hostile.peer_id, path=(hostile.peer_id,),
                        input_cid=cid_of(b"nobody has this %d" % k))
        net.handle(worker, FromIssuer(hostile.peer_id, 1, codec.Offer(offer)))
    assert worker.behaviour.admission.free_slots() == 0  # both slots held, a third offer queued
    assert [cid for _, cid in fetches][:2] == [cid_of(b"nobody has this 0"), cid_of(b"nobody has this 1")]
    net.tick(net.now + 1.0)  # (its TaskAccepted went out after the accept delay)
    assert worker.behaviour.admission.free_slots() == 0
    net.tick(net.now + FETCH_WAIT_S)  # within seconds, not a 60 s fetch timeout
    refusals = [m for m in net.sent(codec.Rejected, by="worker") if m.task_id.startswith("evil/")]
    assert len(refusals) == STRIKES_MAX
    assert all("could not fetch its input" in m.reason for m in refusals)
    assert worker.behaviour.admission.free_slots() == 2  # the slots are back
    assert {r for r, _ in fetches} <= worker.aborted  # and the fetches called off
    record = worker.behaviour.trust.get(hostile.peer_id)
    assert record is not None
    assert record.timeouts == STRIKES_MAX  # it cost the offerer
    # its next offer is refused at once; an honest issuer's is not
    offer = replace(ref, task_id="evil/t9", job_id="evil", issuer=hostile.peer_id, path=(hostile.peer_id,))
    net.handle(worker, FromIssuer(hostile.peer_id, 1, codec.Offer(offer, frame_chunks([b"x"]))))
    (last,) = [m for m in net.sent(codec.Rejected, by="worker") if m.task_id == "evil/t9"]
    assert "refused: 3 blocks your offers named were not served" in last.reason
    assert worker.behaviour.admission.free_slots() == 2


def test_one_unserved_block_that_several_offers_share_is_one_strike() -> None:
    # A loaded issuer that serves its module too slowly once fails every offer naming it at the same time:
    # that is one fault, not a reason to refuse all its work for five minutes.
    net, sub, worker = pair()
    slow = net.add("slow")
    ref = net.submit(sub, [b"x"]).task("job/t0").ref
    real_do = net._do

    def do(peer: Peer, actions: list[Action]) -> None:  # the worker's fetches go nowhere: nobody answers
        real_do(peer, [a for a in actions if not (isinstance(a, Fetch) and peer is worker)])

    net._do = do  # type: ignore[method-assign]
    shared = cid_of(b"the one block nobody serves in time")
    for k in range(STRIKES_MAX):
        offer = replace(ref, task_id=f"slow/t{k}", job_id="slow", issuer=slow.peer_id, path=(slow.peer_id,),
                        input_cid=shared)
        net.handle(worker, FromIssuer(slow.peer_id, 1, codec.Offer(offer)))
    net.tick(net.now + 1.0)
    net.tick(net.now + FETCH_WAIT_S)
    refusals = [m for m in net.sent(codec.Rejected, by="worker") if m.task_id.startswith("slow/")]
    assert len(refusals) == STRIKES_MAX
    assert all("could not fetch its input" in m.reason for m in refusals)
    offer = replace(ref, task_id="slow/t9", job_id="slow", issuer=slow.peer_id, path=(slow.peer_id,))
    net.handle(worker, FromIssuer(slow.peer_id, 1, codec.Offer(offer, frame_chunks([b"x"]))))
    assert not [m for m in net.sent(codec.Rejected, by="worker") if m.task_id == "slow/t9"]  # taken


def test_a_served_task_whose_module_is_missing_fetches_it_within_a_bound_then_runs() -> None:
    net, sub, worker = pair()
    other = cid_of(b"another module")
    ref = replace(net.submit(sub, [b"x"]).task("job/t0").ref, task_id="job/t8", module_cid=other)
    fetches: list[Fetch] = []
    real_do = net._do

    def do(peer: Peer, actions: list[Action]) -> None:  # the test answers the worker's fetches itself
        fetches.extend(a for a in actions if isinstance(a, Fetch) and peer is worker)
        real_do(peer, [a for a in actions if not (isinstance(a, Fetch) and peer is worker)])

    net._do = do  # type: ignore[method-assign]
    net.handle(worker, FromIssuer(sub.peer_id, 1, codec.Offer(ref, frame_chunks([b"x"]))))
    (fetch,) = fetches
    assert (fetch.cid, fetch.peers) == (other, (sub.peer_id,))  # from the issuer first
    assert worker.behaviour.serving("job/t8") is not None
    worker.store.data[other] = b"the other module"
    net.handle(worker, Fetched(fetch.request, b"the other module"))
    (result,) = [m for m in net.sent(codec.Result, by="worker") if m.task_id == "job/t8"]
    assert isinstance(result, codec.Result)


@pytest.mark.parametrize("policy", ["spot:1", "adaptive"])
def test_a_policy_that_spot_checks_is_refused_at_submit_when_this_peer_could_never_re_run_the_chunks(
        policy: str) -> None:
    net, sub, _ = pair()  # the submitter accepts 16 MiB of memory, the job's tasks ask for 64 MiB
    with pytest.raises(ConfigError) as info:
        net.submit(sub, [b"x"], policy=policy)
    assert str(info.value) == (
        f"config verification: {policy} re-runs chunks on this peer to check them, but this peer accepts at most "
        "16 MiB of memory (task needs 64 MiB): lower the job's limits, raise this peer's [compute] limits, or use "
        "replicas:N")
    assert "job" not in sub.behaviour.jobs
    run = net.submit(sub, [b"x"], policy="replicas:1")  # a policy that does not re-run here is taken
    assert run.state is JobState.DONE


def test_a_lie_caught_by_a_spot_check_travels_as_a_fraud_proof_and_is_verified_by_a_bystander() -> None:
    net = Net()
    sub = net.add("submitter")
    liar = net.add("liar")
    original = net._executed

    def lie(peer: Peer, act: Execute) -> Executed:
        ev = original(peer, act)
        if peer is liar and act.purpose is Purpose.SERVE and ev.outputs:
            return Executed(ev.request, [b"wrong" * 4 for _ in ev.outputs], None, ev.fuel_used)
        return ev

    net._executed = lie  # type: ignore[method-assign]
    net.submit(sub, [b"a", b"b"], policy="spot:1", per_task=2)
    assert [m for s, _, m in net.wire if s == "liar" and isinstance(m, codec.Result)], "the liar got no task"
    (publisher, proof), *_ = net.published  # the submitter caught the lie and published a proof
    assert publisher == "submitter"
    assert sub.behaviour.proofs.counters["published"] == 1
    assert liar.behaviour.proofs.counters["false_proofs"] == 0  # the liar's own check: its honest re-run agrees
    # a peer that joins later gets the proof, fetches the input from the sender, re-runs the task, and passes it on
    stranger = net.add("stranger")  # never dealt with the liar: drops it, no re-run, no relay
    net.published.clear()
    net.handle(stranger, ProofReceived(sub.peer_id, proof))
    assert stranger.behaviour.proofs.counters["dropped"] == 1
    assert stranger.behaviour.proofs.counters["lies_proven"] == 0  # not re-run
    assert stranger.behaviour.trust.get(liar.peer_id) is None
    assert net.published == []
    bystander = net.add("bystander")
    bystander.behaviour.trust.record(liar.peer_id, Outcome.VALID, net.now)  # it used the liar before
    net.handle(bystander, ProofReceived(sub.peer_id, proof))
    assert bystander.behaviour.proofs.counters["lies_proven"] == 1
    assert bystander.behaviour.trust.score(liar.peer_id, net.now) < 0
    assert bystander.behaviour.trust.score(sub.peer_id, net.now) == 0  # the sender was right
    assert net.published == [("bystander", proof)]  # published on, once
    net.handle(bystander, ProofReceived(liar.peer_id, proof))  # a copy that comes back is not checked again
    assert bystander.behaviour.proofs.counters["lies_proven"] == 1
    assert net.published == [("bystander", proof)]


def test_a_false_fraud_proof_costs_its_sender_trust_and_goes_no_further() -> None:
    net = Net()
    accuser = net.add("accuser")
    honest = net.add("honest")
    judge_peer = net.add("judge")
    chunks = [b"x", b"y"]
    framed = frame_chunks(chunks)
    input_cid = accuser.store.put(framed)
    ref_binding = replace(net.submit(accuser, [b"z"]).task("job/t0").ref, input_cid=input_cid, chunk_count=2).binding()
    right = issue_receipt(honest.behaviour.ctx.identity, ref_binding, output=frame_chunks([sha(c) for c in chunks]),
                          fuel_used=2000, now=net.now, rng=random.Random(1))
    data = FraudProof.of(right, output_digest=sha(b"not it"), fuel_used=2000).encode()
    judge_peer.behaviour.trust.record(honest.peer_id, Outcome.VALID, net.now)  # it uses the accused
    net.published.clear()
    net.handle(judge_peer, ProofReceived(accuser.peer_id, data))
    assert judge_peer.behaviour.proofs.counters["false_proofs"] == 1
    assert judge_peer.behaviour.trust.score(accuser.peer_id, net.now) < 0
    assert judge_peer.behaviour.trust.score(honest.peer_id, net.now) == 1.0  # as it was
    assert net.published == []  # not passed on


def test_a_proof_above_this_peers_limits_is_dropped_and_a_forged_one_costs_its_sender() -> None:
    net = Net()
    small = net.add("small", memory_bytes_max=16 << 20)
    sender, worker = net.add("sender"), net.add("worker")
    ref = net.submit(sender, [b"z"]).task("job/t0").ref  # LIMITS: 64 MiB, above what "small" runs
    r = issue_receipt(worker.behaviour.ctx.identity, ref.binding(), output=frame_chunks([b"bad"]), fuel_used=1,
                      now=net.now, rng=random.Random(2))
    data = FraudProof.of(r).encode()
    small.behaviour.trust.record(worker.peer_id, Outcome.VALID, net.now)  # it uses the accused
    net.handle(small, ProofReceived(sender.peer_id, data))
    assert small.behaviour.proofs.counters["dropped"] == 1
    assert small.behaviour.trust.score(sender.peer_id, net.now) == 0
    forged = data[:-1] + bytes([data[-1] ^ 1])
    net.handle(worker, ProofReceived(sender.peer_id, forged))
    assert worker.behaviour.proofs.counters["rejected"] == 1
    assert worker.behaviour.trust.score(sender.peer_id, net.now) < 0
