"""The [coordinator], [verify] and [trust] sections, from a TOML file and from `pangea node --set`, reach the
objects a running peer's coordinators and checks use (not only the config object)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
import trio

from pangea_p2p.cli.main import build_parser
from pangea_p2p.cli.node import config_from_args
from pangea_p2p.core.chunks import unframe_chunks
from pangea_p2p.core.jobs.model import JobOptions, JobState
from pangea_p2p.core.jobs.request import JobRequest
from pangea_p2p.guests import load_guest
from pangea_p2p.node.peer import open_peer

pytestmark = pytest.mark.slow

TOML = """
[coordinator]
unreachable_cooldown_s = 7
[coordinator.scheduler]
trust_floor = -2.5
[verify]
replicas_max = 5
[trust]
invalid_penalty = 7
"""


async def test_file_and_flag_values_reach_the_running_coordinator(tmp_path: Path) -> None:
    toml = tmp_path / "peer.toml"
    toml.write_text(TOML)
    args = build_parser().parse_args([
        "node", "--data-dir", str(tmp_path / "peer"), "--config", str(toml), "--listen", "/ip4/127.0.0.1/tcp/0",
        "--api-port", "0", "--set", "coordinator.timeout_factor=4", "--set", "verify.clock_skew_max_s=5",
        "--set", "compute.split_above_s=12", "--set", "capacity.task_slots=1",
    ])
    async with open_peer(config_from_args(args)) as peer:
        compute = peer.compute
        assert compute is not None
        module = compute.blocks.put(load_guest("sha256"), persist=True)
        chunks = [b"one", b"two", b"three"]
        cids = tuple(compute.blocks.put(c, persist=True) for c in chunks)
        request = JobRequest(module, cids, JobOptions(chunks_per_task=2))
        run = compute.submit(request.to_spec([len(c) for c in chunks], time.time(), "configured"))
        used = run.config  # what this job's coordinator decides by
        assert used.timeout_factor == 4.0  # --set
        assert used.unreachable_cooldown_s == 7.0  # the file
        assert used.scheduler.trust_floor == -2.5  # the file's [coordinator.scheduler]
        assert used.scheduler.split_above_s == 12.0  # compute.split_above_s, its one key
        assert (used.verify.replicas_max, used.verify.clock_skew_max_s) == (5, 5.0)  # [verify] and --set
        assert compute.verify is used.verify  # the peer's own receipt checks: the same rules
        assert compute.admission.sched is used.scheduler  # admission of received tasks: the same scheduler
        assert compute.trust.config.invalid_penalty == 7.0  # [trust]: the book every coordinator records in
        assert compute.behaviour.trust is compute.trust  # the book its coordinators record in
        with trio.fail_after(60):
            await compute.watch(run.spec.job_id).done.wait()
        assert run.state is JobState.DONE, run.explain()
        outputs = [compute.blocks.get(run.task(t).output_cid) for t in run.spec.task_ids()]
        assert [o for out in outputs if out is not None for o in unframe_chunks(out)] == [
            hashlib.sha256(c).digest() for c in chunks]
