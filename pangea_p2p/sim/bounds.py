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

adaptive (``core.trust.ReplicationPolicy`` and core/jobs/audits.py): a task whose primary is a suspect gets a
vote of ``replicas_suspect`` (majority); any other runs once, and its accepted result is audited (re-run here)
with a probability that is 1 for a worker never confirmed here, within a budget of ``audit_budget`` audits per
accepted result. The primary answered before the plan is chosen and the plan depends on who it is, so the
primary is not an independent draw: say it lies with probability pi (0: an honest primary, q: a liar as primary
every time) while the other replicas lie with probability p. Counting K = (primary lies) + Binomial(n - 1, p) as
above gives escape(n, p, pi), monotone in pi on [0, q]. A single run escapes when its audit is not drawn: at most
1 - min(1, audit_budget) (the budget is shared, so new workers' audits are drawn at about that rate). The rate
of a mix of plans is at most its worst plan's, so

    escape_adaptive <= max(max over pi in {0, q} of escape(replicas_suspect, p, pi), 1 - min(1, audit_budget))

With the defaults this is 0.7: a lie survives its own task's audit about 70 % of the time. It does not survive
the liar's next ones: the first audit that catches a liar proves it (a signed result contradicted by this peer's
deterministic re-execution), re-verifies everything it signed here (backtracking), raises the audit budget and
publishes a fraud proof; the bound counts none of that, and the measured rate of lies that reach a final output
is far lower. In the simulator draws are weighted by trust, so
liars serve fewer replicas than their share f of the workers: p measured as (replicas the liars served / all) x q
isolates the voting from the scheduler's bias.
"""

from __future__ import annotations

from math import comb

from pangea_p2p.core.jobs.model import VerificationMode, VerificationPolicy
from pangea_p2p.core.trust import TrustConfig


def vote_escape(n: int, p: float, primary: float | None = None) -> float:
    """The escape rate of a lie under a vote of ``n`` replicas, each a lying liar with probability ``p`` (the
    first, the primary, with probability ``primary`` when given; a tie's extra replica with ``p``)."""
    pi = p if primary is None else primary
    told = won = 0.0
    for a, pa in ((0, 1.0 - pi), (1, pi)):
        for k in range(n):
            prob = pa * comb(n - 1, k) * p**k * (1.0 - p) ** (n - 1 - k)
            lies = a + k
            if 2 * lies > n:  # a strict majority with at least the quorum: every lie of the vote wins
                told += prob * lies
                won += prob * lies
            elif 2 * lies == n:  # a tie: one more replica decides
                told += prob * (lies + p)
                won += prob * p * (lies + 1)
            else:
                told += prob * lies
    return won / told if told > 0.0 else 0.0


def spot_escape(spot_checks: int, chunks: int) -> float:
    """The escape rate of a lie in one of ``chunks`` chunks when ``spot_checks`` chunks are re-run."""
    return 1.0 - min(spot_checks, chunks) / chunks


def escape_bound(policy: VerificationPolicy, f: float, q: float, chunks: int = 1,
                 trust: TrustConfig | None = None) -> float:
    """The analytic escape rate (adaptive: its upper bound) of ``policy`` when replicas are liars with
    probability ``f`` that lie with probability ``q`` per task, over tasks of ``chunks`` chunks (see the module
    docstring)."""
    p = f * q
    if policy.mode is VerificationMode.REPLICAS:
        return vote_escape(policy.replicas, p)
    if policy.mode is VerificationMode.SPOT:
        return spot_escape(policy.spot_checks, chunks)
    if policy.mode is VerificationMode.ADAPTIVE:
        cfg = trust or TrustConfig()
        votes = [vote_escape(cfg.replicas_suspect, p, pi) for pi in (0.0, q)]
        return max(*votes, 1.0 - min(1.0, cfg.audit_budget))
    return 1.0


__all__ = ["escape_bound", "spot_escape", "vote_escape"]
