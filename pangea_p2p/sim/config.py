"""The options of one simulation run (each is a ``--flag`` of ``pangea sim run``)."""

from __future__ import annotations

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
    mesh_degree: int = 8
    candidates_max: int = 48
    directories: str = "submitters"  # submitters | all
    checks: str = "strict"  # strict | count
    keep_trace: bool = False

    def __post_init__(self) -> None:
        if self.peers < self.submitters + 3 or self.submitters < 1:
            raise ValueError("need at least one submitter and three workers")
        if self.role not in (*ROLES, "mix"):
            raise ValueError(f"role {self.role!r}: one of {', '.join(ROLES)}, mix")
        if not 0.0 <= self.byzantine < 1.0:
            raise ValueError("byzantine is a fraction in [0, 1)")
        if not 0.0 <= self.lie_q <= 1.0:
            raise ValueError("lie_q is a probability in [0, 1]")
        if self.directories not in ("submitters", "all") or self.checks not in ("strict", "count"):
            raise ValueError("directories: submitters|all; checks: strict|count")
        VerificationPolicy.parse(self.policy)

    def replay_args(self, always: tuple[str, ...] = ()) -> str:
        """The non-default options (and those named in ``always``) as command-line flags."""
        default = SimConfig()
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "seed" or f.name in always or value != getattr(default, f.name):
                flag = "--" + f.name.replace("_", "-")
                if isinstance(value, bool):
                    out.append(flag if value else f"--no-{f.name.replace('_', '-')}")
                else:
                    out.append(f"{flag} {value}")
        return " ".join(out)
