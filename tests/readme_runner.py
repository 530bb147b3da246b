"""Run every fenced code block of README.md as written, in order, as a new user would (tests/test_readme.py).

    python -m tests.readme_runner README.md WORKDIR     (from the repository root; exit 0 when every block ran)

The blocks run in one session, against a real small network of peers on this machine:

- the working directory is WORKDIR/clone, with a symlink to each top-level entry of the repository (`.venv`,
  `README.md`, `protocols`, ...) but `.git` and `simulations` (so no block writes into the committed results);
  HOME is WORKDIR/home, so `~/.pangea` and PANGEA_DATA_DIR (set to it) are fresh data dirs;
- ```sh (bash, shell) blocks run with `bash -e -o pipefail`; the word `JOB` in them stands for a job id: the id of
  the latest job of the peer at PANGEA_DATA_DIR when the command naming it runs;
- ```python blocks run in this process, one namespace for all of them, in README order (a later block uses what
  an earlier one defined);
- ```toml blocks are loaded as a peer's config file (every key checked);
- ```text blocks are output shown to the reader, not run.

A block that cannot run inside the suite carries a marker, an HTML comment on the line just before its fence:

- `<!-- readme-test: skip: WHY -->` -- not run (e.g. `make test`, which runs this suite);
- `<!-- readme-test: background until "TEXT" -->` -- a long-running command (`pangea node`): started in the
  background, the next block runs once it printed TEXT; stopped at the end. After the first one is up, the
  runner starts one more peer on 127.0.0.1 bootstrapping from it, so jobs have a network to run on.

Any other block (no language, another language, a marker it does not know) fails the run, naming the line.
The pytest test runs this module in a new network namespace (``unshare -rn``) when it can, so the README's fixed
ports (4001, 5101) never meet another process's.
"""

from __future__ import annotations

import linecache
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

SHELLS = {"sh", "bash", "shell"}
PYTHONS = {"python", "py"}
NOT_CODE = {"text"}
MARKER = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->")
BACKGROUND = re.compile(r'background until "([^"]+)"')
FENCE = re.compile(r"^(```+|~~~+)\s*([^\s`]*)[^`]*$")
JOB_WORD = re.compile(r"\bJOB\b")
BLOCK_TIMEOUT_S = 90.0
READY_TIMEOUT_S = 60.0


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marker: str = ""  # what the readme-test comment just before the fence says ("" without one)

    @property
    def where(self) -> str:
        return f"README.md:{self.line} ({self.lang or 'no language'})"

    def plan(self) -> str:
        """What the runner does with the block: run, background, skip, show; or an error naming why not."""
        if self.marker.startswith("skip:") and self.marker[5:].strip():
            return "skip"
        if BACKGROUND.fullmatch(self.marker) and self.lang in SHELLS:
            return "background"
        if self.marker:
            return (f"error: {self.where}: unknown marker {self.marker!r} (known: 'skip: WHY', "
                    "'background until \"TEXT\"' on a shell block)")
        if self.lang in SHELLS | PYTHONS | {"toml"}:
            return "run"
        if self.lang in NOT_CODE:
            return "show"
        return (f"error: {self.where}: a block the README test cannot run: give it a language it runs (sh, python, "
                "toml; text for output) or mark it <!-- readme-test: skip: WHY --> (see tests/readme_runner.py)")


def parse_blocks(markdown: str) -> list[Block]:
    """The fenced code blocks of ``markdown`` with their language and marker, in order."""
    lines = markdown.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).lower()
        end = i + 1
        while end < len(lines) and not lines[end].startswith(fence):
            end += 1
        prev = lines[i - 1].strip() if i > 0 else ""
        marker = MARKER.fullmatch(prev)
        blocks.append(Block(i + 1, lang, "\n".join(lines[i + 1 : end]) + "\n", marker.group(1) if marker else ""))
        i = end + 1
    return blocks


def with_job_id(code: str) -> str:
    """Shell ``code`` with each word JOB replaced by the id of the latest job when the command runs."""
    if not JOB_WORD.search(code):
        return code
    prelude = f'readme_job() {{ "{sys.executable}" -m tests.readme_runner --latest-job; }}\n'
    return prelude + JOB_WORD.sub('"$(readme_job)"', code)


def latest_job() -> int:
    """Print the id of the latest job of the peer at PANGEA_DATA_DIR (``--latest-job``)."""
    from pangea_p2p.errors import PangeaError
    from pangea_p2p.node.config import default_data_dir
    from pangea_p2p.sdk.client import Client

    try:
        with Client.for_data_dir(default_data_dir()) as client:
            jobs = client.jobs()["jobs"]
    except PangeaError as exc:
        print(f"a README block names JOB: {exc}", file=sys.stderr)
        return 1
    if not jobs:
        print(f"a README block names JOB, but the peer at {default_data_dir()} has no job yet", file=sys.stderr)
        return 1
    print(jobs[-1]["job_id"])
    return 0


# --- running --------------------------------------------------------------------------------------------------


class Background:
    """A long-running block: its process (a new session, stopped as a group) and everything it printed."""

    def __init__(self, block: Block, cwd: Path, env: dict[str, str]) -> None:
        self.block = block
        self.output: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(["bash", "-e", "-o", "pipefail", "-c", block.code], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.output.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, text: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not any(text in line for line in self.output):
                left = deadline - time.monotonic()
                if self.proc.poll() is not None or left <= 0:
                    why = f"exited ({self.proc.returncode})" if self.proc.poll() is not None else "timed out"
                    raise RunError(f"{self.block.where}: {why} before printing {text!r}:\n" + "\n".join(self.output))
                self._cond.wait(min(left, 0.5))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class RunError(Exception):
    pass


@dataclass
class Session:
    readme: Path
    work: Path
    clone: Path = field(init=False)
    env: dict[str, str] = field(init=False)
    background: list[Background] = field(default_factory=list)
    namespace: dict[str, object] = field(default_factory=lambda: {"__name__": "__readme__"})
    done: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        repo = self.readme.resolve().parent
        self.clone = self.work / "clone"
        self.clone.mkdir(parents=True)
        for entry in repo.iterdir():
            if entry.name not in (".git", "simulations"):
                (self.clone / entry.name).symlink_to(entry)
        home = self.work / "home"
        home.mkdir()
        self.env = {**os.environ, "HOME": str(home), "PANGEA_DATA_DIR": str(home / ".pangea"),
                    "PYTHONUNBUFFERED": "1"}

    def run(self, blocks: list[Block]) -> None:
        errors = [p.removeprefix("error: ") for p in (b.plan() for b in blocks) if p.startswith("error")]
        if errors:
            raise RunError("\n".join(errors))
        for block in blocks:
            plan = block.plan()
            t0 = time.monotonic()
            if plan == "run":
                {"toml": self._toml, "python": self._python, "py": self._python}.get(block.lang, self._shell)(block)
            elif plan == "background":
                self._background(block)
            self.done.append(f"{block.where}: {plan} ({time.monotonic() - t0:.1f} s)")
            print(self.done[-1], flush=True)

    def close(self) -> None:
        for bg in reversed(self.background):
            bg.stop()

    def _shell(self, block: Block) -> None:
        code = with_job_id(block.code)
        try:
            proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], cwd=self.clone, env=self.env,
                                  capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RunError(f"{block.where}: still running after {BLOCK_TIMEOUT_S:g} s:\n{code}") from None
        if proc.returncode != 0:
            raise RunError(f"{block.where}: exit status {proc.returncode}:\n{code}\n--- stdout\n{proc.stdout[-3000:]}"
                           f"\n--- stderr\n{proc.stderr[-3000:]}")

    def _python(self, block: Block) -> None:
        os.chdir(self.clone)
        os.environ.update(self.env)
        # as if the block were a file: inspect.getsource (a Python step's source) finds it
        linecache.cache[block.where] = (len(block.code), None, block.code.splitlines(keepends=True), block.where)
        try:
            exec(compile(block.code, block.where, "exec"), self.namespace)  # the README's own code
        except Exception:
            raise RunError(f"{block.where}: raised\n{traceback.format_exc()}") from None

    def _toml(self, block: Block) -> None:
        from pangea_p2p.errors import PangeaError
        from pangea_p2p.node.config import load_config

        path = self.work / f"block-{block.line}.toml"
        path.write_text(block.code)
        try:
            load_config(path, {}, self.work / f"toml-{block.line}")
        except PangeaError as exc:
            raise RunError(f"{block.where}: not a valid config file: {exc}") from None

    def _background(self, block: Block) -> None:
        match = BACKGROUND.fullmatch(block.marker)
        assert match is not None
        bg = Background(block, self.clone, self.env)
        self.background.append(bg)
        bg.wait_for(match.group(1))
        if len(self.background) == 1:
            self._second_peer(bg)

    def _second_peer(self, first: Background) -> None:
        """One more peer, on 127.0.0.1, bootstrapping from the first one the README started; up when the first
        one lists it among its peers."""
        addrs = [line.split()[-1].replace("/ip4/0.0.0.0/", "/ip4/127.0.0.1/") for line in first.output
                 if line.startswith(("listening on /ip4/127.0.0.1/", "listening on /ip4/0.0.0.0/"))]
        if not addrs:
            raise RunError(f"{first.block.where}: printed no 'listening on /ip4/127.0.0.1/...' (or 0.0.0.0) address "
                           "to bootstrap a second peer from:\n" + "\n".join(first.output))
        helper = Block(0, "sh", f"exec {self.clone}/.venv/bin/pangea node --data-dir {self.work}/peer2 --listen "
                                f"/ip4/127.0.0.1/tcp/0 --api-port 0 --bootstrap {addrs[0]}\n")
        bg = Background(helper, self.clone, self.env)
        self.background.append(bg)
        bg.wait_for("api on ")
        from pangea_p2p.sdk.client import Client

        with Client.for_data_dir(self.work / "peer2") as second, Client.for_data_dir(self._data_dir()) as client:
            second_id = second.id()["peer_id"]
            deadline = time.monotonic() + READY_TIMEOUT_S
            while second_id not in str(client.capacity()):
                if time.monotonic() > deadline:
                    raise RunError("the second peer's capacity advert never reached the first peer")
                time.sleep(0.1)

    def _data_dir(self) -> Path:
        return Path(self.env["PANGEA_DATA_DIR"])


def loopback_up() -> None:
    """Bring up ``lo`` (in a new network namespace it starts down)."""
    import fcntl
    import socket
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, siocgifflags, struct.pack("16sH14x", b"lo", 0)))[1]
        if not flags & iff_up:
            fcntl.ioctl(s, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))


def main(argv: list[str]) -> int:
    if argv == ["--latest-job"]:
        return latest_job()
    readme, work = Path(argv[0]), Path(argv[1])
    if "--netns" in argv:
        loopback_up()
    session = Session(readme, work)
    try:
        session.run(parse_blocks(readme.read_text()))
    except RunError as exc:
        print(f"README test FAILED: {exc}", file=sys.stderr, flush=True)
        for bg in session.background:
            print(f"--- output of {bg.block.where}:\n" + "\n".join(bg.output[-40:]), file=sys.stderr)
        return 1
    finally:
        session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
