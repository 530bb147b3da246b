"""The options of one simulation run (each is a ``--flag`` of ``pangea sim run``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from pangea_p2p.core.jobs.model import VerificationPolicy
from pangea_p2p.sim.sandbox import ROLES


@dataclass(frozen=True)
class SimConfig:
    """Every option of a run; each is a ``--flag`` of ``pangea sim run`` (underscores become dashes)."""

    seed: int = 1
    peers: int = 200
    jobs: int = 40
    tasks_per_job: int = 4
    chunks_per_task: int = 1
    chunk_bytes: int = 256
    fuel_unit: int = 30_000  # fuel per modelled unit; a chunk is 1..65536 units (about 1e9 fuel, 1 s, on average)
    policy: str = "replicas:3"
    commit_reveal: bool = True
    retries_max: int = 3
    depth_max: int = 0  # how often a task may be split again (splits need directories="all")
    byzantine: float = 0.0  # fraction of workers (non-submitters) with a Byzantine role
    role: str = "wrong"  # one of peer.ROLES, or "mix" (the Byzantine roles in turn)
    lie_q: float = 1.0  # chance that a wrong, collude or sybil worker lies on a task it serves (drawn per task)
    submitters: int = 8
    warmup_s: float = 10.0
    arrival_s: float = 60.0  # jobs arrive uniformly over [warmup, warmup + arrival]
    safety_s: float = 200.0
    liveness_s: float = 200.0
    loss: float = 0.0
    jitter: float = 0.1
    partition: str = "none"  # none | one | majority | islands:K
    asymmetric: bool = False
    partition_at_s: float = 30.0
    partition_for_s: float = 60.0
    crash: float = 0.0  # fraction of workers that crash during the safety phase (restart after restart_s)
    submitter_crash: float = 0.0  # fraction of submitters that crash once and resume their jobs from the journal
    leave: float = 0.0  # fraction of workers that leave for good
    join: float = 0.0  # fraction of workers that join late
    restart_s: float = 30.0
    clog: float = 0.0  # fraction of peers clogged one after another during the safety phase
    clog_s: float = 10.0
    slow: float = 0.0  # fraction of workers that run slow_factor times slower than they measured
    slow_factor: float = 10.0
    nat: float = 0.0  # fraction of the peers behind a NAT (private), reached through relays (sim/nat.py)
    relays_wanted: int = 2
    relay_circuit_s: float = 600.0
    relay_circuit_bytes: int = 64 << 20
    mesh_degree: int = 8
    candidates_max: int = 48
    directories: str = "submitters"  # submitters | all
    checks: str = "strict"  # strict | count
    keep_trace: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{flag(f.name)} {value}: a finite number >= 0")
            if isinstance(value, int) and not isinstance(value, bool) and value < INT_MIN.get(f.name, 0):
                raise ValueError(f"{flag(f.name)} {value}: at least {INT_MIN.get(f.name, 0)}")
        for name in FRACTIONS:
            if getattr(self, name) > 1.0:
                raise ValueError(f"{flag(name)} {getattr(self, name)}: a fraction in [0, 1]")
        if self.peers < self.submitters + 3:
            raise ValueError(f"--peers {self.peers}: need the submitters ({self.submitters}) and three workers")
        if self.role not in (*ROLES, "mix"):
            raise ValueError(f"--role {self.role!r}: one of {', '.join(ROLES)}, mix")
        if self.byzantine >= 1.0:
            raise ValueError(f"--byzantine {self.byzantine}: a fraction in [0, 1)")
        if self.slow_factor < 1.0:
            raise ValueError(f"--slow-factor {self.slow_factor}: at least 1")
        if self.loss >= 1.0:
            raise ValueError(f"--loss {self.loss}: a fraction in [0, 1) (every message is retransmitted until it "
                             "gets through)")
        if self.directories not in ("submitters", "all"):
            raise ValueError(f"--directories {self.directories!r}: submitters or all")
        if self.checks not in ("strict", "count"):
            raise ValueError(f"--checks {self.checks!r}: strict or count")
        VerificationPolicy.parse(self.policy)

    def replay_args(self, always: tuple[str, ...] = ()) -> str:
        """The non-default options (and those named in ``always``) as command-line flags."""
        default = SimConfig()
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "seed" or f.name in always or value != getattr(default, f.name):
                if isinstance(value, bool):
                    out.append(flag(f.name) if value else f"--no-{f.name.replace('_', '-')}")
                else:
                    out.append(f"{flag(f.name)} {value}")
        return " ".join(out)


def flag(name: str) -> str:
    """The command-line flag of the option ``name``."""
    return "--" + name.replace("_", "-")


INT_MIN = {"peers": 4, "submitters": 1, "tasks_per_job": 1, "chunks_per_task": 1, "chunk_bytes": 1, "fuel_unit": 1,
           "mesh_degree": 1, "candidates_max": 1, "relays_wanted": 1}
FRACTIONS = ("byzantine", "lie_q", "loss", "crash", "submitter_crash", "leave", "join", "clog", "slow", "nat")

HELP: dict[str, str] = {
    "seed": "the seed every random choice of the run derives from",
    "peers": "peers in the network, submitters included",
    "jobs": "jobs the submitters submit in all",
    "tasks_per_job": "tasks per job",
    "chunks_per_task": "input chunks per task",
    "chunk_bytes": "size of an input chunk, bytes",
    "fuel_unit": "fuel per modelled work unit; a chunk is 1-65,536 units, about 1 s of work on average",
    "policy": "verification policy: hash, spot:K, replicas:N or adaptive",
    "commit_reveal": "replicas commit to a hash of their result before revealing it",
    "retries_max": "worker faults a task survives, each retried elsewhere",
    "depth_max": "how often a task may be split again; splits need --directories all",
    "byzantine": "fraction of the workers (peers that are not submitters) given --role, in [0, 1)",
    "role": "what the Byzantine workers do: honest (nothing), wrong (a random wrong result), collude and sybil "
            "(one party, one wrong result; Sybils also inflate their adverts), copy, liar (inflated adverts), "
            "withhold, forge, or mix (every role in turn)",
    "lie_q": "probability that a wrong, collude or sybil worker lies on a task it serves, drawn per task",
    "submitters": "peers that submit jobs, the first of the peers",
    "warmup_s": "seconds of virtual time before the first job, for adverts to spread",
    "arrival_s": "jobs arrive uniformly over this many seconds after the warm-up",
    "safety_s": "seconds of the safety phase, when jobs arrive and faults happen",
    "liveness_s": "seconds of the liveness phase after it: faults heal, every job must finish",
    "loss": "probability that a message's segment is lost and retransmitted after a timeout, in [0, 1)",
    "jitter": "extra latency per message, up to this fraction of the link's latency",
    "partition": "partition during the safety phase: none, one (one peer cut off), majority (a majority/minority "
                 "split) or islands:K (K groups)",
    "asymmetric": "the partition drops only the messages leaving one side, not both ways",
    "partition_at_s": "when the partition starts, seconds of virtual time",
    "partition_for_s": "how long the partition lasts, seconds; it heals by the end of the safety phase at the "
                       "latest",
    "crash": "fraction of the workers that crash during the safety phase and restart after --restart-s",
    "submitter_crash": "fraction of the submitters that crash once with jobs in flight and resume them from their "
                       "journal",
    "leave": "fraction of the workers that leave for good during the safety phase",
    "join": "fraction of the workers that join late, during the safety phase",
    "restart_s": "seconds a crashed peer stays down",
    "clog": "fraction of the peers clogged one after another from --partition-at-s: their messages are held "
            "until they unclog",
    "clog_s": "mean seconds a clogged peer stays clogged",
    "slow": "fraction of the workers that run --slow-factor times slower than they advertise",
    "slow_factor": "how many times slower a slow worker runs",
    "nat": "fraction of the peers behind a NAT: nobody can dial them; they hold reservations on public peers "
           "that relay streams to them",
    "relays_wanted": "relays a peer behind a NAT keeps a reservation on",
    "relay_circuit_s": "seconds a relay keeps a circuit open before it closes it (0: no limit)",
    "relay_circuit_bytes": "bytes a circuit carries before the relay closes it (0: no limit)",
    "mesh_degree": "degree of the gossip mesh that spreads capacity adverts",
    "candidates_max": "listed workers the scheduler is offered per decision, besides those with its tasks",
    "directories": "who keeps a capacity directory: submitters, or all (needed for workers to split tasks)",
    "checks": "strict: the first broken invariant stops the run (exit 1); count: count wrong results and go on",
    "keep_trace": "keep every event of the trace in memory, not only its digest",
}
