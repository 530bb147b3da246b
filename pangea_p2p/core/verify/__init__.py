"""Verification of results: pure, deterministic code shared by the node and the simulator.

    merkle.py         RFC 6962 Merkle trees over output chunks: roots, inclusion proofs, verification
    receipts.py       signed execution receipts: canonical encoding, verification, VerifiedTree
    replay.py         ReplayGuard: one accepted receipt per (task, worker), in bounded memory
    chain.py          delegation receipts and offline verification of whole receipt trees
    voting.py         the per-task quorum state machine of redundant execution
    commit_reveal.py  commit-then-reveal rounds so replicas cannot copy each other
    spotcheck.py      re-execute k random chunks against a worker's Merkle commitment
    config.py         VerifyConfig, the subsystem's one frozen configuration

Trust scores and the adaptive replication policy are in ``pangea_p2p.core.trust``. The byte formats are
specified in protocols/receipt.md. Every rejection is a VerificationError with a RejectReason code.
"""
