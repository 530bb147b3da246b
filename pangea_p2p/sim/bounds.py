"""Analytic escape rates of lies under each verification policy: what the simulator's measurement is set beside.

Model. A fraction ``f`` of the workers are liars of one party; each lies on a task it serves with probability
``q``, independently of the others and of its past, and the party's lies for one task are the same bytes (so
they vote together); everyone else returns the right bytes. Every replica of a task is drawn independently and
uniformly from the workers, so each is a lying liar with probability ``p = f q``. No replica fails to answer.
The *escape rate* is the fraction of all lies told that end in a final output: E[lies that won] / E[lies told],
over tasks.

replicas:n, quorum ``m`` = n for n <= 2, else floor(n/2) + 1 (``voting.quorum_for``), commit-then-reveal (all n
answer before the tally decides). Let K ~ Binomial(n, p) be the lies among the n votes; only two answers exist.
If 2K > n the lie has a strict majority and at least m votes: its K lies escape. If 2K = n (even n) the tally
is tied and escalates by one replica, which lies with probability p: then K + 1 lies escape. Otherwise the right
answer wins. So

    E[lies told] = n p + P[K = n/2] p                  (the second term for even n only)
    E[lies won]  = sum_{k > n/2} k P[K = k] + P[K = n/2] p (n/2 + 1)
    escape(n, p) = E[lies won] / E[lies told]

which gives escape(3, p) = 1 - (1 - p)^2 (about 2p) and escape(2, p) = p (3 - 2p) / (1 + p - p^2) (about 3p:
replicas:2 needs both to agree, but a disagreement escalates to a third replica that decides alone).

spot:k over c chunks per task (a lie changes one chunk, re-executed here with probability min(k, c)/c):
1 - min(k, c)/c. hash (no check): 1.

adaptive (``core.trust.ReplicationPolicy``): each task gets one of three plans from its primary's record — a
vote of ``replicas_suspect`` (majority), a vote of ``replicas_untrusted`` (all agree, escalating on a
disagreement), or a single run with min(``spot_checks_trusted``, c) spot checks. Within each plan every vote is
drawn as above, so the rate is a weighted mean of the plans' rates and at most the worst one:

    escape_adaptive <= max(escape(replicas_suspect, p), escape(replicas_untrusted, p), 1 - min(k, c)/c)

With the defaults (3, 2, 3 spot checks) and one chunk per task that is escape(2, p), about 3 f q. The bound
assumes the plan does not depend on who the replicas are; in the simulator it does (liars that lost a vote
become suspects, and the scheduler weights draws by trust), which is why the measurement can fall below it.
Audits and backtracking (re-checking accepted results) lower the real rate further; the bound ignores them.
"""

from __future__ import annotations

from math import comb

from pangea_p2p.core.jobs.model import VerificationMode, VerificationPolicy
from pangea_p2p.core.trust import TrustConfig


def vote_escape(n: int, p: float) -> float:
    """The escape rate of a lie under a vote of ``n`` replicas, each a lying liar with probability ``p``."""
    if p <= 0.0:
        return 0.0
    pk = [comb(n, k) * p**k * (1.0 - p) ** (n - k) for k in range(n + 1)]
    tie = pk[n // 2] if n % 2 == 0 else 0.0
    told = n * p + tie * p
    won = sum(k * pk[k] for k in range(n + 1) if 2 * k > n) + tie * p * (n // 2 + 1)
    return won / told


def spot_escape(spot_checks: int, chunks: int) -> float:
    """The escape rate of a lie in one of ``chunks`` chunks when ``spot_checks`` chunks are re-run."""
    return 1.0 - min(spot_checks, chunks) / chunks


def escape_bound(policy: VerificationPolicy, f: float, q: float, chunks: int = 1,
                 trust: TrustConfig | None = None) -> float:
    """The analytic escape rate (adaptive: its upper bound) of ``policy`` for a fraction ``f`` of liars lying
    with probability ``q`` per task, over tasks of ``chunks`` chunks (see the module docstring)."""
    p = f * q
    if policy.mode is VerificationMode.REPLICAS:
        return vote_escape(policy.replicas, p)
    if policy.mode is VerificationMode.SPOT:
        return spot_escape(policy.spot_checks, chunks)
    if policy.mode is VerificationMode.ADAPTIVE:
        cfg = trust or TrustConfig()
        return max(vote_escape(cfg.replicas_suspect, p), vote_escape(cfg.replicas_untrusted, p),
                   spot_escape(cfg.spot_checks_trusted, chunks))
    return 1.0


__all__ = ["escape_bound", "spot_escape", "vote_escape"]
