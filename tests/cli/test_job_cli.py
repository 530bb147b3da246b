"""`pangea job ...` through the real entry point (``pangea_p2p.cli.main.main``), with the peer's API replaced by
the in-memory peer of tests/sdk/fakes.py: bad arguments are one clear line naming the option and a non-zero
exit, never a traceback, and nothing is uploaded; the commands print what the peer answers."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from pangea_p2p.cli import common
from pangea_p2p.cli import main as cli
from pangea_p2p.cli.job import OPTION_FLAGS, job_options, split_input
from pangea_p2p.core.chunks import frame_chunks, unframe_chunks
from pangea_p2p.core.cid import cid_of
from pangea_p2p.core.jobs.model import DEFAULT_OPTIONS, JobLimits, JobOptions, VerificationPolicy
from pangea_p2p.core.jobs.request import JobRequest
from pangea_p2p.errors import ConfigError
from pangea_p2p.guests import load_guest
from pangea_p2p.sdk import Job, splits
from tests.sdk.fakes import FakePeer

API = ["--api", "127.0.0.1:9"]  # never dialled: the Client is the fake peer
TEXT = b"alpha beta\ngamma\ndelta epsilon zeta\neta\n"


@pytest.fixture
def peer(monkeypatch: pytest.MonkeyPatch) -> FakePeer:
    fake = FakePeer(job_ids=["job1", "job2", "job3"])

    def client(address: str, token: str | None = None, timeout_s: float = 30.0) -> FakePeer:
        assert address == "127.0.0.1:9"
        fake.tokens.append(token)
        return fake

    monkeypatch.setattr(common, "Client", client)
    return fake


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "input.txt"
    path.write_bytes(TEXT)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["job", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def error_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.startswith("pangea: error:")]
    assert len(lines) == 1, err
    return lines[0]


# --- split_input ------------------------------------------------------------------------------------------


def test_split_input_kinds() -> None:
    assert split_input(TEXT, "none") == [TEXT]
    assert split_input(TEXT, "lines:3") == splits.lines(TEXT, 3)
    assert split_input(TEXT, "bytes:10") == splits.fixed_size(TEXT, 10)
    assert split_input(TEXT, "count:4") == splits.by_count(TEXT, 4)
    assert split_input(frame_chunks([b"a", b"", b"bc"]), "framed") == [b"a", b"", b"bc"]
    assert split_input(b"", "lines:5") == [b""]
    assert split_input(b"", "none") == [b""]


@pytest.mark.parametrize(
    "spec", ["chunks:4", "lines", "lines:", "lines:x", "bytes:0", "count:-1", "lines:0", "framed", "none:3", ""]
)
def test_split_input_errors_name_the_option(spec: str) -> None:
    with pytest.raises(ConfigError) as info:
        split_input(b"not a framed list", spec)
    assert info.value.key == "--split"
    assert info.value.problem.startswith(repr(spec))


# --- bad arguments ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--split", "chunks:4"], "config --split: 'chunks:4': use none, lines:N, bytes:N, count:N or framed"),
        (["--split", "lines:many"], "config --split: 'lines:many'"),
        (["--split", "bytes:0"], "config --split: 'bytes:0'"),
        (["--split", "framed"], "config --split: 'framed': the input is not a framed chunk list"),
        (["--verify", "bogus"], "config --verify: 'bogus': use hash, spot:K, replicas:N or adaptive"),
        (["--verify", "spot:x"], "config --verify: 'spot:x'"),
        (["--verify", "replicas:40"],
         "config --verify: 'replicas:40': replicas must be in 1..9, got 40"),
        (["--verify", "hash:2"], "config --verify: 'hash:2': hash takes no argument"),
        (["--chunks-per-task", "0"], "config --chunks-per-task: must be in 1..1048576, got 0"),
        (["--fuel", "0"], "config --fuel: must be in 1..1000000000000000, got 0"),
        (["--memory-mib", "0"], "config --memory-mib: must be in 1..4096, got 0"),
        (["--memory-mib", "5000"], "config --memory-mib: must be in 1..4096, got 5000"),
        (["--wall-time-s", "0"], "config --wall-time-s: must be in 0.001..86400, got 0"),
        (["--output-bytes-max", "-1"], "config --output-bytes-max: must be in 0..1073741824, got -1"),
        (["--deadline-s", "-3"], "config --deadline-s: must be a positive, finite number of seconds"),
        (["--retries-max", "99"], "config --retries-max: must be in 0..16, got 99"),
        (["--escalations-max", "9"], "config --escalations-max: must be in 0..8, got 9"),
        (["--depth-max", "9"], "config --depth-max: must be in 0..8, got 9"),
        (["--queue-timeout-s", "0"], "config --queue-timeout-s: must be in (0, 86400], got 0"),
        (["--fuel-per-chunk-estimate", "-1"], "config --fuel-per-chunk-estimate: must be in 0..18446744073709551615"),
        (["--job-id", "a/b"], "config --job-id: 'a/b' must be 1..64 characters of A-Z a-z 0-9 - _"),
        (["--job-id", "a?b"], "config --job-id: 'a?b' must be 1..64 characters of A-Z a-z 0-9 - _"),
        (["--wall-time-s", "nan"], "config --wall-time-s: must be in 0.001..86400, got nan"),
        (["--wall-time-s", "1e-9"], "config --wall-time-s: must be in 0.001..86400, got 1e-09"),
        (["--wall-time-s", "inf"], "config --wall-time-s: must be in 0.001..86400, got inf"),
        (["--queue-timeout-s", "nan"], "config --queue-timeout-s: must be in (0, 86400], got nan"),
    ],
)
def test_bad_options_are_named(peer: FakePeer, text_file: Path, capsys: pytest.CaptureFixture[str],
                               args: list[str], expected: str) -> None:
    code, out, err = run(capsys, "submit", *API, "--guest", "echo", "--input", str(text_file), *args)
    assert code == 2
    assert error_line(err).startswith(f"pangea: error: {expected}")
    assert out == ""
    assert peer.blocks == {}  # refused before anything was uploaded
    assert peer.requests == []


def test_unreadable_input_is_named(peer: FakePeer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.txt"
    code, _, err = run(capsys, "submit", *API, "--guest", "echo", "--input", str(missing))
    assert code == 2
    assert error_line(err) == f"pangea: error: config --input: cannot read {missing}: No such file or directory"
    code, _, err = run(capsys, "submit", *API, "--guest", "echo", "--input", str(tmp_path))
    assert code == 2
    assert error_line(err) == f"pangea: error: config --input: cannot read {tmp_path}: Is a directory"
    assert peer.blocks == {}


def test_unknown_guest_is_named(peer: FakePeer, text_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "submit", *API, "--guest", "no_such_guest", "--input", str(text_file))
    assert code == 2
    assert error_line(err).startswith("pangea: error: config --guest: no_such_guest is neither a built-in guest")
    assert peer.blocks == {}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["submit", *API, "--input", "x"], "the following arguments are required: --guest"),
        (["submit", *API, "--guest", "echo", "--input", "x", "--chunks-per-task", "two"],
         "argument --chunks-per-task: invalid int value: 'two'"),
        (["submit", *API, "--guest", "echo", "--input", "x", "--fuel", "1e9"], "argument --fuel: invalid int value"),
        (["status", *API], "the following arguments are required: JOB"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: JOB_COMMAND"),
    ],
)
def test_usage_errors_exit_2(peer: FakePeer, capsys: pytest.CaptureFixture[str], argv: list[str],
                             expected: str) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["job", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err


# --- submit -----------------------------------------------------------------------------------------------


def test_submit_prints_the_job_id_and_sends_the_options(peer: FakePeer, text_file: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "submit", *API, "--guest", "sha256", "--input", str(text_file), "--split",
                         "lines:1", "--chunks-per-task", "3", "--verify", "spot:2", "--fuel", "123456789",
                         "--memory-mib", "8", "--wall-time-s", "2.5", "--deadline-s", "600")
    assert code == 0
    assert out == "job1\n"
    assert err == "job job1 submitted: 4 chunk(s) in 2 task(s)\n"
    (request,) = peer.requests
    assert request == {
        "module_cid": cid_of(load_guest("sha256")),
        "chunk_cids": [cid_of(c) for c in splits.lines(TEXT, 1)],
        "chunks_per_task": 3,
        "limits": {"fuel_max": 123456789, "memory_bytes_max": 8 << 20, "wall_time_s": 2.5,
                   "output_bytes_max": DEFAULT_OPTIONS.limits.output_bytes_max},
        "verification": "spot:2",
        "deadline_s": 600.0,
        "retries_max": 3, "escalations_max": 2, "depth_max": 2, "queue_timeout_s": 30.0, "fuel_per_chunk_estimate": 0,
    }


def test_every_option_of_a_job_request_is_a_flag(peer: FakePeer, text_file: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    values = {"--chunks-per-task": "2", "--verify": "replicas:5", "--fuel": "5000000", "--memory-mib": "3",
              "--wall-time-s": "4.5", "--output-bytes-max": "4096", "--deadline-s": "90", "--retries-max": "0",
              "--escalations-max": "1", "--depth-max": "0", "--queue-timeout-s": "5.5",
              "--fuel-per-chunk-estimate": "77", "--job-id": "mine"}
    assert set(values) == {flag for flag, *_ in OPTION_FLAGS}
    code, out, _ = run(capsys, "submit", *API, "--guest", "echo", "--input", str(text_file), "--split", "lines:1",
                       *[x for pair in values.items() for x in pair])
    assert (code, out) == (0, "mine\n")
    (request,) = peer.requests
    assert JobRequest.from_json(request) == JobRequest(
        cid_of(load_guest("echo")), tuple(cid_of(c) for c in splits.lines(TEXT, 1)), JobOptions(
            chunks_per_task=2, verification=VerificationPolicy.parse("replicas:5"), deadline_s=90.0,
            limits=JobLimits(fuel_max=5_000_000, memory_bytes_max=3 << 20, wall_time_s=4.5, output_bytes_max=4096),
            retries_max=0, escalations_max=1, depth_max=0, queue_timeout_s=5.5, fuel_per_chunk_estimate=77,
        ), job_id="mine")


def test_the_flags_defaults_are_the_sdks() -> None:
    args = cli.build_parser().parse_args(["job", "submit", "--guest", "echo", "--input", "x"])
    assert job_options(args) == Job("any", guest="echo").options == DEFAULT_OPTIONS


def test_submit_reads_stdin(peer: FakePeer, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"from stdin")))
    code, out, _ = run(capsys, "submit", *API, "--guest", "echo", "--input", "-", "--split", "none")
    assert (code, out) == (0, "job1\n")
    assert [peer.blocks[c] for c in peer.requests[0]["chunk_cids"]] == [b"from stdin"]


def test_submit_wait_shows_progress_and_writes_the_outputs(peer: FakePeer, text_file: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "out.hex"
    code, out, err = run(capsys, "submit", *API, "--guest", "sha256", "--input", str(text_file), "--split",
                         "lines:1", "--chunks-per-task", "2", "--wait", "-o", str(out_file))
    assert code == 0
    assert out == ""
    # sha256 has a decoder: one hex digest per chunk, in order
    assert out_file.read_text() == "".join(hashlib.sha256(c).hexdigest() + "\n" for c in splits.lines(TEXT, 1))
    lines = err.splitlines()
    assert lines[0] == "job job1 submitted: 4 chunk(s) in 2 task(s)"
    fuel = peer.job("job1")["fuel_used"]
    # the fake's statuses are 0.5 s apart: the first change, then (within PROGRESS_LINE_INTERVAL_S) only the end
    assert lines[1] == (f"job1 running: 1/2 done, 1 running, 0 verifying, 0 pending, 0 failed; fuel {fuel // 2}, "
                        "0.5s, eta 0.5s")
    assert lines[2] == f"job1 done: 2/2 done, 0 running, 0 verifying, 0 pending, 0 failed; fuel {fuel}, 1.5s"
    assert lines[3] == f"wrote {65 * 4} bytes to {out_file}"
    assert len(lines) == 4
    code, _, _ = run(capsys, "submit", *API, "--guest", "sha256", "--input", str(text_file), "--split",
                     "lines:1", "--wait", "--format", "raw", "-o", str(out_file))
    assert code == 0
    assert out_file.read_bytes() == b"".join(hashlib.sha256(c).digest() for c in splits.lines(TEXT, 1))


def test_submit_wait_of_a_failing_job_exits_1_with_the_reason(peer: FakePeer, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    framed = tmp_path / "chunks.bin"
    framed.write_bytes(frame_chunks([b"Eok", b"Tu"]))
    code, out, err = run(capsys, "submit", *API, "--guest", "probe", "--input", str(framed), "--split", "framed",
                         "--wait")
    assert code == 1
    assert out == ""
    assert "job job1 failed: task job1/t1 failed: chunk 0: guest trapped" in err
    assert "run `pangea job explain job1` for the reasons of every task" in err


def test_check_receipts_verifies_against_what_was_submitted(peer: FakePeer, text_file: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "out.bin"
    argv = ["submit", *API, "--guest", "sha256", "--input", str(text_file), "--split", "lines:1", "--wait",
            "--check-receipts", "-o", str(out_file)]
    code, _, err = run(capsys, *argv)
    assert code == 0
    assert err.splitlines()[-2].startswith("OK: 4 signed receipt(s) over 4 task(s) verified offline")
    assert out_file.read_text() == "".join(hashlib.sha256(c).hexdigest() + "\n" for c in splits.lines(TEXT, 1))
    out_file.unlink()
    # a peer that ran another module than the one this command uploaded: caught, nothing written
    real = peer.job_result
    other = cid_of(b"another module")
    peer.job_result = lambda job_id: {**real(job_id), "module_cid": other}  # type: ignore[method-assign]
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert error_line(err) == (f"pangea: error: job job2: the receipts do not verify, no output written: FAILED: "
                               f"4 of 4 task(s) did not verify; job: the job ran module {other}, not the submitted "
                               f"{cid_of(load_guest('sha256'))}")
    assert not out_file.exists()


# --- the other commands -----------------------------------------------------------------------------------


def submitted(peer: FakePeer, chunks: list[bytes], guest: str = "echo", per_task: int = 1) -> str:
    module = peer.upload_block(load_guest(guest))
    cids = tuple(peer.upload_chunks(frame_chunks(chunks)))
    status: dict[str, Any] = peer.submit_job(JobRequest(module, cids, JobOptions(chunks_per_task=per_task)))
    return str(status["job_id"])


def test_status_plain_and_json(peer: FakePeer, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = submitted(peer, [b"a", b"b", b"c"])
    code, out, _ = run(capsys, "status", *API, job_id)
    assert code == 0
    assert out == f"{job_id} running: 0/3 done, 1 running, 0 verifying, 2 pending, 0 failed; fuel 0, 0.0s\n"
    code, out, _ = run(capsys, "status", *API, job_id, "--json")
    assert code == 0
    assert json.loads(out) == peer.job(job_id)


def test_wait_exits_0_when_done_and_1_when_not(peer: FakePeer, capsys: pytest.CaptureFixture[str]) -> None:
    good = submitted(peer, [b"Ea", b"Eb"], guest="probe")
    code, _, err = run(capsys, "wait", *API, good)
    assert code == 0
    assert err.splitlines()[-1].startswith(f"{good} done: 2/2 done")
    bad = submitted(peer, [b"Ea", b"Td"], guest="probe")
    code, _, err = run(capsys, "wait", *API, bad)
    assert code == 1
    assert f"job {bad} failed: task {bad}/t1 failed" in err


def test_result_to_a_file_framed_and_to_stdout(peer: FakePeer, tmp_path: Path,
                                               capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    job_id = submitted(peer, [b"one", b"two", b"three"], per_task=2)
    out_file = tmp_path / "result.bin"
    assert cli.main(["job", "result", *API, job_id, "-o", str(out_file)]) == 0
    assert out_file.read_bytes() == b"onetwothree"
    assert cli.main(["job", "result", *API, job_id, "-o", str(out_file), "--framed"]) == 0
    assert unframe_chunks(out_file.read_bytes()) == [b"one", b"two", b"three"]
    capsysbinary.readouterr()
    assert cli.main(["job", "result", *API, job_id]) == 0
    assert capsysbinary.readouterr().out == b"onetwothree"


def test_result_of_a_failed_job_says_what_is_missing_and_partial_writes_the_rest(
        peer: FakePeer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = submitted(peer, [b"Ea", b"Tu", b"Tv", b"Ed"], guest="probe")  # T...: the guest traps
    peer.job(job_id)  # runs it
    code, _, err = run(capsys, "result", *API, job_id)
    assert code == 1
    assert "has 2 of 4 chunk(s) without output (failed); partial_outputs() or `pangea job result --partial`" in err
    out_file = tmp_path / "partial.bin"
    code, _, err = run(capsys, "result", *API, job_id, "--partial", "--framed", "-o", str(out_file))
    assert code == 3
    assert f"partial result: 2 of 4 chunk(s); missing chunk(s) 1-2 (job failed: task {job_id}/t1 failed" in err
    chunks = unframe_chunks(out_file.read_bytes())
    assert len(chunks) == 4
    assert chunks[1] == chunks[2] == b""
    assert chunks[0]
    assert chunks[3]


def test_result_to_an_unwritable_path_is_one_line(peer: FakePeer, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    job_id = submitted(peer, [b"x"])
    target = tmp_path / "no" / "such" / "dir.bin"
    code, _, err = run(capsys, "result", *API, job_id, "-o", str(target))
    assert code == 1
    assert error_line(err) == f"pangea: error: cannot write {target}: No such file or directory"


def test_explain_lists_the_reasons(peer: FakePeer, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = submitted(peer, [b"Ea", b"Tu"], guest="probe")
    code, out, _ = run(capsys, "explain", *API, job_id)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"job {job_id}: failed (task {job_id}/t1 failed: chunk 0: guest trapped: wasm `unreachable` " \
                       "instruction executed)"
    assert lines[1] == f"  {job_id}/t1: failed"
    assert lines[2].startswith("    - chunk 0: guest trapped")
    code, out, _ = run(capsys, "explain", *API, job_id, "--json", "--all")
    assert json.loads(out) == peer.explain(job_id)
    assert peer.explained[:2] == [(job_id, False), (job_id, True)]


def test_cancel_and_list(peer: FakePeer, capsys: pytest.CaptureFixture[str]) -> None:
    first = submitted(peer, [b"a"])
    second = submitted(peer, [b"b", b"c"])
    code, out, _ = run(capsys, "cancel", *API, second)
    assert code == 0
    assert out.startswith(f"{second} cancelled: 0/2 done")
    assert out.rstrip().endswith("(cancelled by the submitter)")
    code, out, _ = run(capsys, "list", *API)
    assert code == 0
    assert [line.split()[:3] for line in out.splitlines()] == [["JOB", "STATE", "DONE"], [first, "running", "0/1"],
                                                               [second, "cancelled", "0/2"]]
    code, out, _ = run(capsys, "list", *API, "--json")
    assert [s["job_id"] for s in json.loads(out)["jobs"]] == [first, second]


def test_an_unknown_job_is_one_line(peer: FakePeer, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("status", "wait", "result", "explain", "cancel"):
        code, out, err = run(capsys, command, *API, "nope")
        assert code == 1
        assert error_line(err) == "pangea: error: no job nope on this peer"
        assert out == ""


def test_the_client_is_closed_after_the_command(peer: FakePeer, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "list", *API)
    assert peer.closed


def test_the_api_token_is_the_flags_else_the_environments_else_the_data_dirs(
        peer: FakePeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PANGEA_API_TOKEN", raising=False)
    empty, data_dir = tmp_path / "none", tmp_path / "peer"
    empty.mkdir()
    data_dir.mkdir()
    (data_dir / "api_token").write_text("a" * 64 + "\n")
    run(capsys, "list", *API, "--data-dir", str(empty))
    run(capsys, "list", *API, "--data-dir", str(data_dir))
    monkeypatch.setenv("PANGEA_API_TOKEN", "b" * 64)
    run(capsys, "list", *API, "--data-dir", str(data_dir))
    run(capsys, "list", *API, "--data-dir", str(data_dir), "--token", "c" * 64)
    assert peer.tokens == [None, "a" * 64, "b" * 64, "c" * 64]


def test_a_field_the_peer_refuses_is_said_of_its_flag(peer: FakePeer, text_file: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The peer's own maxima (here its output maximum, which no peer advertises) are checked at submit."""
    code, _, err = run(capsys, "submit", *API, "--guest", "echo", "--input", str(text_file),
                       "--output-bytes-max", str(128 << 20))
    assert code == 2
    assert error_line(err) == ("pangea: error: config --output-bytes-max: must be in 0..67108864 (this peer's "
                               "compute.output_bytes_max; peers do not advertise theirs), got 134217728")
    assert peer.runs == {}
