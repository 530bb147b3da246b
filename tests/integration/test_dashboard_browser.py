"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``; .ci/run installs it), driven over
the DevTools protocol, shows a real peer on 127.0.0.1 while a real job runs. One page load: what it draws
changes as the job does (it polls), and the DOM it built from the API is checked (peer ids, the job and its
progress, its tasks on the timeline with their workers and how they were verified), its requests carry the
API token it took from the address (and took out of it), and a screenshot is not blank and shows the done
tasks. Skips, saying why, where no Chromium can be had."""

from __future__ import annotations

import base64
import functools
import io
import itertools
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import trio
from matplotlib.image import imread
from trio_websocket import WebSocketConnection, open_websocket_url

from pangea_p2p.cli.dashboard import dashboard_url
from pangea_p2p.core.jobs.model import JobState, VerificationPolicy
from pangea_p2p.node.peer import Peer
from pangea_p2p.sdk.client import read_api_token
from pangea_p2p.testing import open_network, wait_for
from tests.integration.test_jobs import SETTINGS, finished, network_ready, submit

pytestmark = pytest.mark.slow

BROWSER_START_S = 30.0
PAGE_S = 30.0  # the page shows what is asked of it within this
DONE_RGB = (0x2E, 0x9D, 0x5A)  # --done in dashboard.css
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
         "--no-proxy-server", "--remote-debugging-port=0"]


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


class Page:
    """One browser tab over the DevTools protocol: commands answered by id, events kept."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        await self.ws.send_message(json.dumps({"id": msg_id, "method": method, "params": params}))
        with trio.fail_after(PAGE_S):
            while True:
                msg = json.loads(await self.ws.get_message())
                if msg.get("id") == msg_id:
                    if "error" in msg:
                        raise AssertionError(f"{method}: {msg['error']}")
                    result: dict[str, Any] = msg["result"]
                    return result
                self.events.append(msg)

    async def eval(self, expression: str) -> Any:
        answer = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in answer, answer
        return answer["result"].get("value")

    async def wait_until(self, expression: str, what: str) -> None:
        """Until ``expression`` is true in the page (re-evaluated every 0.1 s; while the page loads it may throw),
        at most PAGE_S."""
        guarded = f"(() => {{ try {{ return Boolean({expression}); }} catch (e) {{ return false; }} }})()"
        with trio.move_on_after(PAGE_S):
            while not await self.eval(guarded):  # noqa: ASYNC110 (a page's DOM signals nothing to this side)
                await trio.sleep(0.1)
            return
        dom = await self.eval("document.body.innerText")
        raise AssertionError(f"the page did not show {what} within {PAGE_S:g} s; it shows:\n{dom[:3000]}")


@asynccontextmanager
async def browser_page(browser: str, profile: Path) -> AsyncIterator[Page]:
    """A headless Chromium with a fresh profile (``profile``, a new directory) and one blank tab, stopped at the
    end."""
    command = [browser, *FLAGS, f"--user-data-dir={profile}", "about:blank"]
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(functools.partial(
            trio.run_process, command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        try:
            port_file = profile / "DevToolsActivePort"
            await wait_for(lambda: (port_file.exists() and len(port_file.read_text().splitlines()) >= 2)
                           or proc.returncode is not None, BROWSER_START_S)
            assert proc.returncode is None, f"chromium exited with {proc.returncode}"
            port = int(port_file.read_text().splitlines()[0])
            async with httpx.AsyncClient(trust_env=False) as http:
                targets = (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
            tab = next(t for t in targets if t["type"] == "page")
            async with open_websocket_url(tab["webSocketDebuggerUrl"], max_message_size=64 << 20) as ws:
                yield Page(ws)
        finally:
            proc.terminate()
            nursery.cancel_scope.deadline = trio.current_time() + 10


def rows_of(attribute: str) -> str:
    """JS: the values of ``data-<attribute>`` of the page's elements, in document order."""
    camel = attribute.split("-")[0] + "".join(w.title() for w in attribute.split("-")[1:])
    return f"[...document.querySelectorAll('[data-{attribute}]')].map(e => e.dataset.{camel})"


def api_token(peer: Peer) -> str:
    """The peer's API token; a made-up one when it keeps none (then nothing checks it)."""
    return read_api_token(peer.config.data_dir) or "0123456789abcdef" * 4


async def test_the_dashboard_follows_a_job_live_and_shows_the_network_and_its_tasks(tmp_path: Path) -> None:
    browser = find_chromium()
    async with open_network(3, tmp_path / "peers", SETTINGS) as peers, \
            browser_page(browser, tmp_path / "profile") as page:
        await network_ready(peers)
        submitter = peers[0]
        others = sorted(p.peer_id for p in peers[1:])
        token = api_token(submitter)
        await page.call("Network.enable")
        await page.call("Emulation.setDeviceMetricsOverride", width=1400, height=1600, deviceScaleFactor=1,
                        mobile=False)
        await page.call("Page.navigate", url=dashboard_url(f"127.0.0.1:{submitter.api_port}", token))
        await page.wait_until("document.body.dataset.ready === '1'", "every part drawn from the API")
        assert await page.eval("location.hash") == ""  # the token left the address bar
        assert await page.eval("sessionStorage.getItem('pangea-api-token')") == token
        assert await page.eval("document.getElementById('self-id').dataset.peerId") == submitter.peer_id
        assert sorted(await page.eval(rows_of("peer-id") + ".filter(id => id !== '" + submitter.peer_id + "')")) \
            == others  # the network table (the trust table is empty: nobody worked for this peer yet)
        assert await page.eval(rows_of("job-id")) == []
        assert await page.eval("document.getElementById('jobs-empty').hidden") is False

        # the same page, not reloaded, follows a job from submission to its end
        chunks = [f"browser {i}".encode() * 40 for i in range(8)]
        run = submit(submitter, chunks, verification=VerificationPolicy.parse("replicas:2"))
        job = run.spec.job_id
        await page.wait_until(f"{rows_of('job-id')}.includes('{job}')", "the new job")
        await finished(run, 60)
        assert run.state is JobState.DONE, run.explain()
        await page.wait_until(f"document.querySelector('[data-job-id=\"{job}\"]').innerText.includes('8 / 8')",
                              "the job's progress at 8 of 8")
        await page.wait_until(f"{rows_of('state')}.length === 8 && {rows_of('state')}.every(s => s === 'done')",
                              "its 8 tasks done on the timeline")
        assert await page.eval("document.getElementById('timeline-job').textContent") == job
        assert await page.eval(rows_of("task-id")) == list(run.spec.task_ids())
        assert await page.eval(rows_of("worker")) == [t.worker for t in run.tasks()]
        for task in run.tasks():  # where each ran (every replica behind its result) and how it was verified
            info = await page.eval(f"document.querySelector('[data-task-id=\"{task.task_id}\"] .tinfo').innerText")
            assert "2 of 2 replicas agreed" in info, info
            assert len(task.backers) == 2
            for backer in task.backers:
                assert ("here" if backer == submitter.peer_id else f"{backer[:6]}…{backer[-6:]}") in info, info
        await page.wait_until(f"{rows_of('peer-id')}.length === 5", "the workers in the trust table too")
        await page.wait_until("[...document.querySelectorAll('#peers-body tr')].every(r => / ms$/.test("
                              "r.children[2].innerText))", "the round-trip time to each peer")
        for peer_id in others:
            assert await page.eval(f"{rows_of('peer-id')}.filter(id => id === '{peer_id}').length") == 2

        # it asked nothing of anyone but this peer, and every API call carried the token it was given
        requests = [e["params"]["request"] for e in page.events if e.get("method") == "Network.requestWillBeSent"]
        origin = f"http://127.0.0.1:{submitter.api_port}/"
        assert {r["url"] for r in requests if not r["url"].startswith(origin)} == set()
        assert {r["url"].removeprefix(origin) for r in requests} >= {"", "static/dashboard.css", "static/dashboard.js"}
        calls = [r for r in requests if "/v1/" in r["url"]]
        assert calls
        assert all(c["headers"].get("Authorization") == f"Bearer {token}" for c in calls)

        shot = await page.call("Page.captureScreenshot", format="png", optimizeForSpeed=True)
        pixels = (imread(io.BytesIO(base64.b64decode(shot["data"])))[..., :3] * 255).round().astype(np.int32)
        assert pixels.shape[:2] == (1600, 1400)
        colours = np.unique(pixels[..., 0] << 16 | pixels[..., 1] << 8 | pixels[..., 2])
        assert len(colours) > 50, "a blank (or nearly blank) screenshot"
        done = np.all(np.abs(pixels - np.array(DONE_RGB)) <= 2, axis=-1).sum()
        assert done > 2000, f"the progress bar and the timeline's done tasks are drawn ({done} pixels)"
