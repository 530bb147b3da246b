"""Verification of results: pure, deterministic code shared by the node and the simulator.

The package is layered: a module imports only modules listed before it here (TYPE_CHECKING imports
included), so there is no import cycle; tests/core/verify/test_layers.py holds it to that.

  foundations, independent of one another
    format.py         the byte format: version, domain tags, struct layouts, sizes, receipt kinds, the
                      rules for ids, u64s and times
    merkle.py         RFC 6962 Merkle trees over output chunks: roots, inclusion proofs, verification
    config.py         VerifyConfig, the subsystem's one frozen configuration
    replay.py         ReplayGuard: one accepted receipt per (task, signer), in bounded memory
  receipts
    binding.py        TaskBinding and ReceiptLimits, what an issuer asked for; the replay key of a receipt
    receipts.py       Receipt, DelegationReceipt, ReceiptTree: their canonical encoding and decoding;
                      VerifiedTree, what a verified receipt or tree proves
    checks.py         the single checks: signature and key, binding, fuel, freshness, output bytes
    execution.py      execution receipts: issue_receipt, verify_receipt
    delegation.py     delegation receipts: delegate (sign one over verified children), the checks of a
                      delegation receipt against its children
    tree.py           verify_tree: a whole receipt tree, offline, output included
  deciding on verified results
    voting.py         the per-task quorum state machine of redundant execution
    commit_reveal.py  commit-then-reveal rounds so replicas cannot copy each other
    spotcheck.py      re-execute k random chunks against a worker's Merkle commitment
  passing a proven lie on
    fraud.py          fraud proofs (a liar's receipt and the task to re-run): format, judging by one
                      re-execution, the intake's rate limits, dedup and pending cap

Trust scores and the adaptive replication policy are in ``pangea_p2p.core.trust``. The byte formats are
specified in protocols/receipt.md. Every rejection is a VerificationError with a RejectReason code.
"""
