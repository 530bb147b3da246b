"""What `pangea` prints for a person and for a program: decoded results of the built-in guests, no binary on a
terminal, ``--json`` as one JSON document everywhere, tables with headers, job-id prefixes, throttled progress
lines with a measured ETA. Through the real entry point, with the in-memory peer of tests/sdk/fakes.py."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pangea_p2p.cli import common
from pangea_p2p.cli import main as cli
from pangea_p2p.cli.job import EtaEstimator, ProgressLines
from pangea_p2p.core.chunks import frame_chunks
from pangea_p2p.core.jobs.model import JobOptions
from pangea_p2p.core.jobs.request import JobRequest
from pangea_p2p.guests import load_guest
from pangea_p2p.sdk import splits
from tests.sdk.fakes import FakePeer

API = ["--api", "127.0.0.1:9"]
TEXT = b"the cat and the dog\nthe end\nA cat\n"


@pytest.fixture
def peer(monkeypatch: pytest.MonkeyPatch) -> FakePeer:
    fake = FakePeer(job_ids=["abc123", "abd456", "xyz789"])
    monkeypatch.setattr(common, "Client", lambda address, timeout_s=30.0: fake)
    return fake


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def submitted(peer: FakePeer, chunks: list[bytes], guest: str) -> str:
    module = peer.upload_block(load_guest(guest))
    cids = tuple(peer.upload_chunks(frame_chunks(chunks)))
    job_id = str(peer.submit_job(JobRequest(module, cids, JobOptions()))["job_id"])
    peer.wait_job(job_id, 10**6)  # to its final status
    return job_id


def words(text: bytes) -> Counter[str]:
    return Counter(re.findall(r"[a-z0-9]+", text.decode().lower()))


# --- results ------------------------------------------------------------------------------------------------


def test_a_wordcount_result_is_a_table_or_json(peer: FakePeer, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = submitted(peer, splits.lines(TEXT, 1), "wordcount_map")
    expected = words(TEXT)
    code, out, _ = run(capsys, "job", "result", *API, job_id)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "word\tcount"
    assert lines[1:] == [f"{w}\t{c}" for w, c in sorted(expected.items(), key=lambda wc: (-wc[1], wc[0]))]
    code, out, _ = run(capsys, "job", "result", *API, job_id, "--format", "json")
    assert json.loads(out) == dict(expected)
    code, out, _ = run(capsys, "job", "result", *API, job_id, "--json")
    assert json.loads(out) == {"job_id": job_id, "state": "done", "guest": "wordcount_map", "result": dict(expected)}


def test_a_sha256_result_is_hex_and_json_never_holds_raw_bytes(peer: FakePeer, capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    chunks = [b"one", b"two"]
    job_id = submitted(peer, chunks, "sha256")
    code, out, _ = run(capsys, "job", "result", *API, job_id)
    assert (code, out) == (0, "".join(hashlib.sha256(c).hexdigest() + "\n" for c in chunks))
    code, out, err = run(capsys, "job", "result", *API, job_id, "--format", "tsv")
    assert code == 2
    assert err == "pangea: error: config --format: 'tsv': sha256 results come as hex, json or raw\n"
    echo = submitted(peer, [b"\x00\x01", b"\xff"], "echo")  # no decoder: the outputs in base64
    code, out, _ = run(capsys, "job", "result", *API, echo, "--json")
    assert json.loads(out) == {"job_id": echo, "state": "done", "guest": None,
                               "outputs_base64": [base64.b64encode(b"\x00\x01").decode(), "/w=="]}


def test_binary_never_goes_to_a_terminal(peer: FakePeer, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    binary = submitted(peer, [b"\x00\x01\x02"], "echo")
    text = submitted(peer, [b"plain text\n"], "echo")
    digests = submitted(peer, [b"x"], "sha256")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, err = run(capsys, "job", "result", *API, binary)
    assert (code, out) == (1, "")
    assert err == (f"pangea: error: job {binary}'s result is 3 bytes of binary data, not written to the terminal: "
                   "save it with -o FILE\n")
    code, out, err = run(capsys, "job", "result", *API, digests, "--format", "raw")
    assert (code, out) == (1, "")
    assert err.endswith("save it with -o FILE, or decode it with --format hex or json\n")
    assert run(capsys, "job", "result", *API, text)[:2] == (0, "plain text\n")  # text is fine
    assert run(capsys, "job", "result", *API, digests)[:2] == (0, hashlib.sha256(b"x").hexdigest() + "\n")
    code, _, err = run(capsys, "job", "result", *API, binary, "-o", str(tmp_path / "out.bin"))
    assert code == 0
    assert (tmp_path / "out.bin").read_bytes() == b"\x00\x01\x02"


def test_submit_wait_without_output_decodes_to_stdout(peer: FakePeer, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(TEXT)
    code, out, _ = run(capsys, "job", "submit", *API, "--guest", "wordcount_map", "--input", str(corpus), "--split",
                       "lines:2", "--wait")
    assert code == 0
    assert dict((w, int(c)) for w, c in (line.split("\t") for line in out.splitlines()[1:])) == words(TEXT)


def test_submit_json_prints_a_document(peer: FakePeer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(TEXT)
    code, out, _ = run(capsys, "job", "submit", *API, "--guest", "sha256", "--input", str(corpus), "--json")
    assert code == 0
    assert json.loads(out)["job_id"] == "abc123"
    code, out, _ = run(capsys, "job", "submit", *API, "--guest", "sha256", "--input", str(corpus), "--json",
                       "--wait")
    assert json.loads(out)["result"] == [hashlib.sha256(TEXT).hexdigest()]
    code, out, _ = run(capsys, "job", "submit", *API, "--guest", "sha256", "--input", str(corpus), "--json",
                       "--wait", "-o", str(tmp_path / "digest.txt"))
    assert json.loads(out)["state"] == "done"  # the final status; the digest went to the file
    assert (tmp_path / "digest.txt").read_text() == hashlib.sha256(TEXT).hexdigest() + "\n"


# --- job ids ------------------------------------------------------------------------------------------------


def test_a_job_id_may_be_a_unique_prefix(peer: FakePeer, capsys: pytest.CaptureFixture[str]) -> None:
    first, second, _ = (submitted(peer, [b"a"], "echo") for _ in range(3))
    assert (first, second) == ("abc123", "abd456")
    code, out, _ = run(capsys, "job", "status", *API, "abc")
    assert (code, out.split()[0]) == (0, "abc123")
    assert run(capsys, "job", "result", *API, "x")[:2] == (0, "a")
    code, out, err = run(capsys, "job", "status", *API, "ab")
    assert (code, out) == (1, "")
    assert err == "pangea: error: job id prefix 'ab' is ambiguous: abc123, abd456\n"
    code, out, err = run(capsys, "job", "cancel", *API, "q")
    assert (code, err) == (1, "pangea: error: no job q on this peer\n")


# --- other commands -----------------------------------------------------------------------------------------


class InfoClient:
    """The API answers of `pangea peers | capacity | health | trust`."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers

    def __enter__(self) -> InfoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return lambda: self.answers[name]


PEER = "12D3KooWPeerA"


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    docs: dict[str, Any] = {}
    monkeypatch.setattr(common, "Client", lambda address, timeout_s=30.0: InfoClient(docs))
    return docs


def test_tables_have_headers_and_say_when_empty(answers: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    answers.update(peers={"peers": []}, trust={"trust": []}, capacity={"adverts": [], "rejected": {}})
    assert run(capsys, "peers", *API)[1].startswith("no peers known yet")
    assert run(capsys, "trust", *API)[1].startswith("no trust records yet")
    assert run(capsys, "capacity", *API)[1] == "no capacity adverts yet\n"
    answers["peers"] = {"peers": [{"peer_id": PEER, "connected": True, "in_routing_table": False,
                                   "has_advert": True, "addrs": [], "rtt_ms": 0.81}]}
    assert run(capsys, "peers", *API)[1].splitlines() == [
        "PEER           CONNECTED  ROUTING  ADVERT  RTT_MS",
        f"{PEER}  yes        -        yes     0.8"]
    answers["trust"] = {"trust": [{"peer_id": PEER, "score": 2.5, "valid": 3, "invalid": 0, "timeouts": 1,
                                   "outvoted": 0, "lies": 0, "proven": 0, "vindicated": 0}]}
    header, row = run(capsys, "trust", *API)[1].splitlines()
    assert header.split() == ["PEER", "SCORE", "VALID", "INVALID", "TIMEOUTS", "OUTVOTED", "LIES", "PROVEN",
                              "VINDICATED"]
    assert row.split() == [PEER, "2.50", "3", "0", "1", "0", "0", "0", "0"]
    assert json.loads(run(capsys, "trust", *API, "--json")[1]) == answers["trust"]


def test_health_is_text_unless_json(answers: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    answers["health"] = {"status": "ok", "connected_peers": 0,
                         "bootstrap": {"/ip4/127.0.0.1/tcp/1": {"status": "retrying", "attempts": 3}}}
    assert run(capsys, "health", *API)[1].splitlines() == [
        "status: ok", "connected_peers: 0", "bootstrap:", "  /ip4/127.0.0.1/tcp/1: status=retrying, attempts=3"]
    assert json.loads(run(capsys, "health", *API, "--json")[1]) == answers["health"]


# --- progress -----------------------------------------------------------------------------------------------


def status(elapsed_s: float, done: int, total: int = 100, state: str = "running") -> dict[str, Any]:
    return {"job_id": "j", "state": state, "reason": "", "tasks_total": total, "elapsed_s": elapsed_s,
            "fuel_used": 0, "eta_s": 99.0,
            "progress": {"done": done, "running": 1, "verifying": 0, "pending": total - done - 1, "failed": 0}}


def test_the_eta_is_the_measured_rate_of_recent_tasks() -> None:
    eta = EtaEstimator(window_s=10.0)
    eta.add(status(0.0, 0))
    assert eta.eta_s(100) is None  # nothing measured yet
    eta.add(status(2.0, 0))
    assert eta.eta_s(100) is None
    eta.add(status(4.0, 20))  # 20 tasks in 4 s
    assert eta.eta_s(100) == pytest.approx(80 / 5.0)
    for t in range(5, 31):  # then 10 tasks a second: the old, slow start leaves the window
        eta.add(status(float(t), 20 + 10 * (t - 4)))
    assert eta.eta_s(1000) == pytest.approx((1000 - 280) / 10.0)


def test_progress_lines_come_every_few_seconds_at_most(capsys: pytest.CaptureFixture[str]) -> None:
    lines = ProgressLines(status(0.0, 0), interval_s=5.0)
    for i in range(1, 131):  # 130 changes in 13 s
        lines.update(status(0.1 * i, i - 1, total=131))
    lines.finish(status(13.1, 131, total=131, state="done"))
    printed = capsys.readouterr().err.splitlines()
    assert [line.split(";")[1].split(",")[1].strip() for line in printed] == ["0.1s", "5.1s", "10.1s", "13.1s"]
    assert printed[1].endswith(f"eta {(131 - 50) * 5.1 / 50:.1f}s")  # 50 tasks in 5.1 s, not the peer's 99 s
    assert printed[-1].startswith("j done: 131/131 done")
    assert "eta" not in printed[-1]


def test_a_matrix_result_is_an_npy_file(peer: FakePeer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    from pangea_p2p.sdk.matmul import block_inputs
    from tests.sdk.test_matmul import in_guest_order, operands

    a, b = operands(64, 8, 64)
    job_id = submitted(peer, block_inputs(a, b, 32), "matmul_block")
    out = tmp_path / "c.npy"
    code, _, err = run(capsys, "job", "result", *API, job_id, "-o", str(out))
    assert code == 2
    assert err == ("pangea: error: config --shape: the 4 blocks of 32x32 could make matrices of several shapes: say "
                   "the product's with --shape ROWSxCOLS\n")
    assert run(capsys, "job", "result", *API, job_id, "-o", str(out), "--shape", "64x64")[0] == 0
    assert np.array_equal(np.load(out), in_guest_order(a, b))
    with pytest.raises(SystemExit) as info:
        cli.main(["job", "result", *API, job_id, "--shape", "64"])
    assert info.value.code == 2
    assert "argument --shape: '64': use ROWSxCOLS, e.g. 512x512" in capsys.readouterr().err


def test_an_empty_job_id_is_a_usage_error(peer: FakePeer, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "job", "status", *API, "") == (2, "", "pangea: error: config JOB: is empty: give a job id or "
                                                              "a prefix of one\n")


def test_guest_run_writes_no_binary_to_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    chunk = tmp_path / "chunk.txt"
    chunk.write_bytes(b"abc")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, err = run(capsys, "guest", "run", "sha256", "--input", str(chunk))
    assert (code, out) == (1, "")
    assert err == ("pangea: error: the guest's output is 32 bytes of binary data, not written to the terminal: save "
                   "it with -o FILE\n")
    code, out, _ = run(capsys, "guest", "run", "echo", "--input", str(chunk))
    assert (code, out) == (0, "abc")


def test_json_on_wait_cancel_and_a_partial_result(peer: FakePeer, capsys: pytest.CaptureFixture[str]) -> None:
    module = peer.upload_block(load_guest("probe"))
    cids = tuple(peer.upload_chunks(frame_chunks([b"Eok", b"Tu"])))  # T: the guest traps
    job_id = str(peer.submit_job(JobRequest(module, cids, JobOptions()))["job_id"])
    code, out, err = run(capsys, "job", "wait", *API, job_id, "--json")
    assert code == 1
    assert json.loads(out)["state"] == "failed"
    assert f"job {job_id} failed" in err  # the human part stays on stderr
    code, out, _ = run(capsys, "job", "result", *API, job_id, "--partial", "--json")
    assert code == 3
    doc = json.loads(out)
    assert doc["state"] == "failed"
    assert doc["outputs_base64"][1] is None
    assert base64.b64decode(doc["outputs_base64"][0])
    running = submitted(peer, [b"a", b"b"], "echo")
    peer.runs[running].version = 0  # still running
    code, out, _ = run(capsys, "job", "cancel", *API, running, "--json")
    assert (code, json.loads(out)["state"]) == (0, "cancelled")


def test_submit_wait_checks_the_format_before_anything_runs(peer: FakePeer, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(TEXT)
    for extra, line in [(["--format", "npy"], "config --format: 'npy': wordcount_map results come as tsv, json or raw"),
                        (["--format", "tsv", "--json"], "config --json: prints the result as one JSON document")]:
        code, out, err = run(capsys, "job", "submit", *API, "--guest", "wordcount_map", "--input", str(corpus),
                             "--wait", *extra)
        assert (code, out) == (2, "")
        assert err.startswith(f"pangea: error: {line}")
    code, _, err = run(capsys, "job", "submit", *API, "--guest", "echo", "--input", str(corpus), "--wait", "--format",
                       "hex")
    assert (code, err) == (2, "pangea: error: config --format: hex: the job's module is not a built-in guest with a "
                              "decoder; use raw or framed\n")
    assert peer.requests == []  # nothing was submitted
