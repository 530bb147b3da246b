"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``; .ci/run installs it) loads the page
of a real peer on 127.0.0.1 before and after a real job, and what it rendered is checked: the DOM it built from
the API (peer ids, the job, its tasks on the timeline with their workers) and a screenshot (not blank, with the
colour of done tasks in it). Skips, saying why, where no Chromium can be had."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import trio
from matplotlib.image import imread

from pangea_p2p.cli.dashboard import dashboard_url, read_token
from pangea_p2p.core.jobs.model import JobState, VerificationPolicy
from pangea_p2p.node.peer import Peer
from pangea_p2p.testing import open_network
from tests.integration.test_jobs import SETTINGS, finished, network_ready, submit

pytestmark = pytest.mark.slow

CHROMIUM_S_MAX = 60.0
DONE_RGB = (0x2E, 0x9D, 0x5A)  # --done in dashboard.css


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path is not None:
            try:
                subprocess.run([path, "--version"], capture_output=True, timeout=30, check=True)
            except (OSError, subprocess.SubprocessError) as exc:
                pytest.skip(f"{path} does not run here ({exc}); install Debian's chromium (.ci/run does)")
            return path
    pytest.skip("no Chromium here: install Debian's package `chromium` (apt-get install chromium; .ci/run does)")


async def chromium(browser: str, profile: Path, url: str, *args: str) -> bytes:
    """Run headless Chromium on ``url`` (isolated profile, no traffic but to 127.0.0.1); its stdout. The virtual
    time budget lets the page's requests and a few refreshes run before the DOM is dumped or the shot taken."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-extensions", "--no-proxy-server", f"--user-data-dir={profile}",
             "--virtual-time-budget=5000", "--window-size=1400,1600"]
    with trio.fail_after(CHROMIUM_S_MAX):
        done = await trio.run_process([browser, *flags, *args, url], capture_stdout=True, capture_stderr=True,
                                      check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return bytes(done.stdout)


def url_of(peer: Peer) -> str:
    """What `pangea dashboard` prints for ``peer`` (with its API token when the peer keeps one)."""
    return dashboard_url(f"127.0.0.1:{peer.api_port}", read_token(peer.config.data_dir))


def rows(dom: str, attribute: str) -> list[str]:
    return re.findall(rf'{attribute}="([^"]*)"', dom)


async def test_the_dashboard_shows_the_network_a_job_and_its_tasks(tmp_path: Path) -> None:
    browser = find_chromium()
    async with open_network(3, tmp_path / "peers", SETTINGS) as peers:
        await network_ready(peers)
        submitter = peers[0]
        others = {p.peer_id for p in peers[1:]}

        before = (await chromium(browser, tmp_path / "profile1", url_of(submitter), "--dump-dom")).decode()
        assert 'data-ready="1"' in before, before[:3000]  # every API call answered, every part drawn
        assert submitter.peer_id in before
        assert set(rows(before, "data-peer-id")) >= others
        assert rows(before, "data-job-id") == []
        assert re.search(r'<p class="empty" id="jobs-empty">', before), "the empty job table says so"

        chunks = [f"browser {i}".encode() * 40 for i in range(8)]
        run = submit(submitter, chunks, verification=VerificationPolicy.parse("replicas:2"))
        await finished(run, 60)
        assert run.state is JobState.DONE, run.explain()

        dom = (await chromium(browser, tmp_path / "profile2", url_of(submitter), "--dump-dom")).decode()
        assert 'data-ready="1"' in dom, dom[:3000]
        assert rows(dom, "data-job-id") == [run.spec.job_id]
        assert f'<code id="timeline-job">{run.spec.job_id}</code>' in dom
        assert rows(dom, "data-task-id") == list(run.spec.task_ids())
        assert set(rows(dom, "data-state")) == {"done"}
        assert set(rows(dom, "data-worker")) == {t.worker for t in run.tasks()}
        assert "8 / 8" in dom  # the job's progress
        assert "2 of 2 replicas agreed" in dom  # how its tasks were verified
        for peer_id in others:  # in the network and the trust tables
            assert dom.count(f'data-peer-id="{peer_id}"') == 2

        shot = tmp_path / "dashboard.png"
        await chromium(browser, tmp_path / "profile3", url_of(submitter), f"--screenshot={shot}")
        pixels = (imread(shot)[..., :3] * 255).round().astype(np.int16)
        assert pixels.shape[:2] == (1600, 1400)
        colours = np.unique(pixels.reshape(-1, 3), axis=0)
        assert len(colours) > 50, "a blank (or nearly blank) screenshot"
        done = np.all(np.abs(pixels - np.array(DONE_RGB)) <= 2, axis=-1).sum()
        assert done > 2000, f"the progress bar and the timeline's done tasks are drawn ({done} pixels)"
