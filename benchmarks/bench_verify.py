"""Verification speed against bare baselines measured in the same process.

    Merkle tree over 1,000 and 100,000 chunks   vs  a bare hashlib loop over the same chunks
        targets: build < 1 ms for 1,000 leaves; proof verification < 50 µs
    receipts signed / verified per second       vs  bare PyNaCl sign / verify of a message of the same size
        target: ratio <= 1.5

Run: .venv/bin/python benchmarks/bench_verify.py [--quick]   (or `make bench`). Prints medians of repeated runs;
--quick skips the 100,000-leaf tree and runs fewer rounds (a smoke test, a few seconds).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import sys
import time
from typing import TYPE_CHECKING

import nacl.signing

from pangea_p2p.core.chunks import frame_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.identity import Identity
from pangea_p2p.core.verify.binding import ReceiptLimits, TaskBinding
from pangea_p2p.core.verify.config import VerifyConfig
from pangea_p2p.core.verify.delegation import delegate
from pangea_p2p.core.verify.execution import issue_receipt, verify_receipt
from pangea_p2p.core.verify.format import DOMAIN_TAG
from pangea_p2p.core.verify.merkle import MerkleTree, verify_inclusion
from pangea_p2p.core.verify.receipts import ReceiptTree, decode_receipt
from pangea_p2p.core.verify.replay import ReplayGuard
from pangea_p2p.core.verify.tree import verify_tree

if TYPE_CHECKING:
    from collections.abc import Callable

CHUNK_BYTES = 64


def per_call(fn: Callable[[], object], number: int, repeat: int = 7) -> float:
    """Median seconds per call over ``repeat`` rounds of ``number`` calls."""
    rounds = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        rounds.append((time.perf_counter() - start) / number)
    return statistics.median(rounds)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def bench_merkle(quick: bool) -> bool:
    print(f"Merkle trees over {CHUNK_BYTES}-byte chunks (RFC 6962, SHA-256)")
    print(f"  {'leaves':>8} {'bare loop':>11} {'tree build':>11} {'ratio':>6} {'proof':>9} {'verify':>9}")
    ok = bench_merkle_size(1_000, 30 if quick else 300)
    return ok if quick else bench_merkle_size(100_000, 3) and ok


def bench_merkle_size(n: int, number: int) -> bool:
    chunks = [os.urandom(CHUNK_BYTES) for _ in range(n)]
    sha = hashlib.sha256
    bare = per_call(lambda: [sha(c).digest() for c in chunks], number)
    build = per_call(lambda: MerkleTree.from_chunks(chunks), number)
    tree = MerkleTree.from_chunks(chunks)
    i = n // 3
    proof = tree.proof(i)
    root = tree.root
    prove = per_call(lambda: tree.proof(i), 20_000)
    check = per_call(lambda: verify_inclusion(root, chunks[i], proof), 20_000)
    assert verify_inclusion(root, chunks[i], proof)
    print(f"  {n:>8,} {bare * 1e3:>8.3f} ms {build * 1e3:>8.3f} ms {build / bare:>5.2f}x "
          f"{prove * 1e6:>6.2f} µs {check * 1e6:>6.2f} µs")
    ok = True
    if n == 1_000:
        ok = build < 1e-3
        print(f"    target build < 1 ms for 1,000 leaves (seed: 10 ms): {verdict(ok)} "
              f"({0.010 / build:.1f}x better than the seed)")
    ok &= check < 50e-6
    print(f"    target proof verification < 50 µs ({len(proof.path)} siblings): {verdict(check < 50e-6)}")
    return ok


def bench_receipts(n: int, repeat: int) -> bool:
    worker, submitter = Identity(b"\x02" * 32), Identity(b"\x01" * 32)
    limits = ReceiptLimits(10_000_000_000, 100 << 20, 30.0, 1 << 20)
    module_cid, input_cid = cid_of(b"module"), cid_of(frame_chunks([b"input"]))

    def binding_of(task: int) -> TaskBinding:
        return TaskBinding.of(job_id="job-0123456789", task_id=f"task-{task:05d}", module_cid=module_cid,
                              input_cid=input_cid, limits=limits, issuer=submitter.peer_id, chunk_count=1)

    rng = random.Random(1)
    output = frame_chunks([b"output"])
    output_cid, output_root = cid_of(output), MerkleTree.from_chunks([b"output"]).root
    config = VerifyConfig(replay_entries_max=10_000_000)
    now = 1_750_000_000.0
    binding = binding_of(0)

    def sign_for(b: TaskBinding) -> bytes:
        # the worker has the output's id and root from the sandbox run, as a node does
        return issue_receipt(worker, b, output_cid=output_cid, output_root=output_root, output_chunks=1,
                             fuel_used=123_456, now=now, rng=rng).wire

    def sign() -> bytes:
        return sign_for(binding)

    sample = decode_receipt(sign())
    # one receipt per task: the guard accepts one receipt per (task, worker), so each verify is a new task
    bindings = [binding_of(i) for i in range(n * repeat)]
    work = iter([(sign_for(b), b) for b in bindings])
    guard = ReplayGuard(config)
    peer = worker.peer_id

    def verify() -> None:
        wire, b = next(work)
        verify_receipt(decode_receipt(wire), b, now, config, worker=peer, guard=guard)

    sk = nacl.signing.SigningKey(b"\x02" * 32)
    message = DOMAIN_TAG + sample.body
    signature = sk.sign(message).signature
    vk = sk.verify_key

    t_sign = per_call(sign, n, repeat)
    t_bare_sign = per_call(lambda: sk.sign(message), n, repeat)
    t_verify = per_call(verify, n, repeat=repeat)  # n * repeat distinct receipts, each recorded in the guard
    t_bare_verify = per_call(lambda: vk.verify(message, signature), n, repeat)
    assert len(guard) == n * repeat

    print(f"\nReceipts ({len(sample.wire)} bytes; signed message {len(message)} bytes)")
    print(f"  {'':26} {'ours':>14} {'bare PyNaCl':>14} {'ratio':>6}")
    rows = [
        ("sign (issue + encode)", t_sign, t_bare_sign),
        ("verify (decode + checks)", t_verify, t_bare_verify),
        ("sign + verify", t_sign + t_verify, t_bare_sign + t_bare_verify),
    ]
    ok = True
    for name, ours, bare in rows:
        ok &= ours / bare <= 1.5
        print(f"  {name:26} {1 / ours:>9,.0f} /s {1 / bare:>9,.0f} /s {ours / bare:>5.2f}x")
    print(f"    per receipt: sign {t_sign * 1e6:.1f} µs (bare {t_bare_sign * 1e6:.1f}), "
          f"verify {t_verify * 1e6:.1f} µs (bare {t_bare_verify * 1e6:.1f})")
    print(f"    target ratio <= 1.5 for each row: {verdict(ok)}")
    return ok


def bench_tree(number: int) -> None:
    rng = random.Random(2)
    root_issuer, delegator = Identity(b"\x01" * 32), Identity(b"\x04" * 32)
    limits = ReceiptLimits(10_000_000_000, 100 << 20, 30.0, 1 << 20)
    small = ReceiptLimits(10_000_000_000 // 64, 100 << 20, 30.0, 1 << 20)
    now = 1_750_000_000.0
    parts = 64
    root = TaskBinding.of(job_id="job", task_id="t", module_cid=cid_of(b"m"),
                          input_cid=cid_of(frame_chunks([bytes([i]) for i in range(parts)])), limits=limits,
                          issuer=root_issuer.peer_id, chunk_count=parts)
    kids = []
    for i in range(parts):
        w = Identity(bytes([10 + i]) * 32)
        b = TaskBinding.of(job_id="job", task_id=f"t.{i}", parent_task_id="t", module_cid=cid_of(b"m"),
                           input_cid=cid_of(frame_chunks([bytes([i])])), limits=small, issuer=delegator.peer_id,
                           chunk_count=1)
        kids.append(ReceiptTree(issue_receipt(w, b, output=frame_chunks([bytes([i, i]) * CHUNK_BYTES]),
                                              fuel_used=1000, now=now - 1, rng=rng)))
    tree = delegate(delegator, root, kids, now=now, rng=rng)
    output = frame_chunks([bytes([i, i]) * CHUNK_BYTES for i in range(parts)])
    config = VerifyConfig()
    data = tree.encode()
    peer = delegator.peer_id
    t = per_call(lambda: verify_tree(ReceiptTree.decode(data, config), root, now, config, worker=peer), number)
    t_out = per_call(lambda: verify_tree(ReceiptTree.decode(data, config), root, now, config, worker=peer,
                                         output=output), number)
    print(f"\nReceipt tree: 1 delegation over {parts} execution receipts ({len(data):,} bytes): decode + verify "
          f"{t * 1e3:.2f} ms, {t / (parts + 1) * 1e6:.1f} µs per receipt")
    print(f"  the same with its {len(output):,}-byte output checked leaf by leaf: {t_out * 1e3:.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, no 100,000-leaf tree")
    quick = parser.parse_args().quick
    ok = bench_merkle(quick)
    ok &= bench_receipts(1000, 3) if quick else bench_receipts(3000, 7)
    bench_tree(10 if quick else 30)
    print(f"\nall targets met: {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
