"""Fraud proofs over real gossipsub: three peers on 127.0.0.1 in one trio process.

Peer 0 publishes a proof against a liar (a receipt signed by a key of the test's own over a wrong output of a
real guest); peers 1 and 2 fetch the module and input from peer 0, run the task in their own sandboxes, find
the lie and drop their trust in the liar. A false proof (against a right receipt) costs peer 0 its standing,
and an oversized message never reaches the behaviour.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from pangea_p2p.core.chunks import frame_chunks
from pangea_p2p.core.identity import Identity
from pangea_p2p.core.trust import Outcome
from pangea_p2p.core.verify import fraud
from pangea_p2p.core.verify.binding import ReceiptLimits, TaskBinding
from pangea_p2p.core.verify.execution import issue_receipt
from pangea_p2p.guests import load_guest
from pangea_p2p.node.compute import ComputeService
from pangea_p2p.node.peer import Peer
from pangea_p2p.sandbox import SandboxLimits
from pangea_p2p.testing import open_network, wait_for

pytestmark = pytest.mark.slow

LIMITS = ReceiptLimits(fuel_max=10**9, memory_bytes_max=64 << 20, wall_time_s=10.0, output_bytes_max=1 << 16)


def compute(peer: Peer) -> ComputeService:
    assert peer.compute is not None
    return peer.compute


def mesh(peer: Peer) -> set[str]:
    return {str(p) for p in getattr(peer.pubsub.router, "mesh", {}).get(fraud.TOPIC, ())}


async def test_a_published_proof_is_verified_by_the_other_peers(tmp_path: Path) -> None:
    async with open_network(3, tmp_path) as peers:
        origin, others = peers[0], peers[1:]
        await wait_for(lambda: mesh(origin) >= {p.peer_id for p in others}, 30)

        module = load_guest("sha256")
        chunks = [b"a chunk to hash", b"another one"]
        framed = frame_chunks(chunks)
        module_cid = compute(origin).blocks.put(module)
        input_cid = compute(origin).blocks.put(framed)
        binding = TaskBinding.of(job_id="j1", task_id="j1/t0", module_cid=module_cid, input_cid=input_cid,
                                 limits=LIMITS, issuer=origin.peer_id, chunk_count=len(chunks))
        liar, honest = Identity(b"L" * 32), Identity(b"H" * 32)
        rng = random.Random(7)
        for p in others:  # they have dealt with both (a peer verifies proofs about the workers it uses)
            for who in (liar, honest):
                compute(p).trust.record(who.peer_id, Outcome.VALID, time.time())

        lie = issue_receipt(liar, binding, output=frame_chunks([b"not the hash"] * 2), fuel_used=1000,
                            now=time.time(), rng=rng)
        await origin.publish_proof(fraud.FraudProof.of(lie).encode())

        def verified() -> bool:
            return all(compute(p).behaviour.proofs.counters["lies_proven"] == 1 for p in others)

        await wait_for(verified, 60)
        for p in others:
            trust = compute(p).trust
            assert trust.score(liar.peer_id, time.time()) < 0
            assert trust.score(origin.peer_id, time.time()) == 0

        # A false proof: the receipt is right (same output, same fuel as the sandbox gives), the sender is wrong.
        lim = SandboxLimits(fuel_max=LIMITS.fuel_max, memory_bytes_max=LIMITS.memory_bytes_max,
                            wall_time_s=LIMITS.wall_time_s, output_bytes_max=LIMITS.output_bytes_max)
        result = await compute(origin).sandbox.run_chunks(module_cid, module, chunks, lim)
        assert result.failure is None
        right = issue_receipt(honest, binding, output=frame_chunks(list(result.outputs or ())),
                              fuel_used=result.report.fuel_used, now=time.time(), rng=rng)
        await origin.publish_proof(fraud.FraudProof.of(right, fuel_used=1).encode())

        def judged_false() -> bool:
            return all(compute(p).behaviour.proofs.counters["false_proofs"] == 1 for p in others)

        await wait_for(judged_false, 60)
        for p in others:
            assert compute(p).trust.score(origin.peer_id, time.time()) < 0
            assert compute(p).trust.score(honest.peer_id, time.time()) > 0  # as it was

        # An oversized message is refused at the wire, before the behaviour sees it.
        received = [compute(p).behaviour.proofs.counters["received"] for p in others]
        await origin.publish_proof(bytes(fraud.PROOF_BYTES_MAX + 1))
        await origin.publish_proof(fraud.FraudProof.of(lie).encode())  # a copy of the first: after the big one
        await wait_for(lambda: all(compute(p).behaviour.proofs.counters["received"] >= r + 1
                                   for p, r in zip(others, received, strict=True)), 30)
        for p in others:
            counters = compute(p).behaviour.proofs.counters
            assert counters["rejected"] == 0
            assert counters["lies_proven"] == 1  # the copy was seen already
