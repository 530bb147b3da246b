"""Verification strategies: how much checking a task's result gets, one object per policy behind one interface.

A job's ``VerificationPolicy`` picks one (``strategy_for``). The coordinator asks it three things: how many
replicas a task starts with, what to set up for a task when it starts or starts over (an escalation), and,
when the first result of a single-replica task comes in from another peer, what checks it gets (``plan``):

    HashStrategy      none: a valid receipt and matching content ids are enough (this peer may run tasks itself)
    SpotStrategy      k chunks of every result re-run here and compared (verification.py)
    ReplicasStrategy  n distinct workers vote from the start, commit-then-reveal if asked (votes.py)
    AdaptiveStrategy  per result, by the worker's trust record: spot checks, or a vote of more replicas
                      (trust.ReplicationPolicy)

A new strategy is a new class here, not new branches in the coordinator.
"""

from __future__ import annotations

from pangea_p2p.core.jobs.model import VerificationMode, VerificationPolicy
from pangea_p2p.core.jobs.tasks import Host, TaskEntry
from pangea_p2p.core.jobs.votes import Votes
from pangea_p2p.core.trust import ReplicationPolicy


class Strategy:
    """No checks beyond the receipts (the HASH policy); the base of the others."""

    def initial_replicas(self) -> int:
        return 1

    def init_task(self, entry: TaskEntry) -> None:
        """Set up ``entry``'s checks when it starts, or starts over after an escalation."""

    def plan(self, entry: TaskEntry, primary: str, now: float) -> None:
        """The first result of a single-replica task came from ``primary``: decide its checks."""


class HashStrategy(Strategy):
    pass


class SpotStrategy(Strategy):
    def __init__(self, spot_checks: int) -> None:
        self.spot_checks = spot_checks

    def plan(self, entry: TaskEntry, primary: str, now: float) -> None:
        entry.spot_checks = self.spot_checks


class ReplicasStrategy(Strategy):
    def __init__(self, replicas: int, votes: Votes) -> None:
        self.replicas = replicas
        self.votes = votes

    def initial_replicas(self) -> int:
        return self.replicas

    def init_task(self, entry: TaskEntry) -> None:
        self.votes.init_task(entry)


class AdaptiveStrategy(Strategy):
    def __init__(self, host: Host, votes: Votes) -> None:
        self.c = host
        self.votes = votes
        self.replication = ReplicationPolicy(host.trust)

    def plan(self, entry: TaskEntry, primary: str, now: float) -> None:
        plan = self.replication.plan(primary, now, self.c.rng, chunks=entry.ref.chunk_count)
        entry.spot_checks = plan.spot_checks
        if plan.replicas > 1:
            self.votes.start(entry, plan.replicas, [primary], now)
            self.c.note(entry, f"adaptive: {plan.why}")


def strategy_for(policy: VerificationPolicy, host: Host, votes: Votes) -> Strategy:
    if policy.mode is VerificationMode.SPOT:
        return SpotStrategy(policy.spot_checks)
    if policy.mode is VerificationMode.REPLICAS:
        return ReplicasStrategy(policy.replicas, votes)
    if policy.mode is VerificationMode.ADAPTIVE:
        return AdaptiveStrategy(host, votes)
    return HashStrategy()
