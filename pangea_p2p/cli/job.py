"""`pangea job ...`: submit a job to the local peer and follow it.

    pangea job submit --guest wordcount_map --input corpus.txt --split lines:1000 --verify spot:1 --wait -o out.bin
    pangea job status JOB | wait JOB | result JOB [-o FILE] | explain JOB | logs JOB | cancel JOB | list

Every option of a job request (``JobOptions``, pangea_p2p/core/jobs/model.py, and the job id) is a flag of
``submit`` (OPTION_FLAGS), with the same defaults as the SDK's ``Job``; a bad value is refused before anything is
uploaded, naming the flag. ``submit`` goes through the SDK's ``submit_chunks`` like ``Job.submit``, so with
``--wait --check-receipts`` the receipts are checked offline against what this command submitted before the
outputs are written. Progress is a rich progress bar on a terminal and one plain line per change otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pangea_p2p.cli.common import add_api_args, client_from_args
from pangea_p2p.core.chunks import frame_chunks, unframe_chunks
from pangea_p2p.core.jobs.model import (
    DEFAULT_OPTIONS,
    MEMORY_BYTES_ABSOLUTE_MAX,
    JobLimits,
    JobOptions,
    VerificationPolicy,
    as_int,
)
from pangea_p2p.errors import ConfigError, PangeaError, RemoteProtocolError
from pangea_p2p.sdk import splits
from pangea_p2p.sdk.client import ApiCallFailed, Client
from pangea_p2p.sdk.job import JobHandle, resolve_guest, submit_chunks

if TYPE_CHECKING:
    from pangea_p2p.cli.common import Subparsers

_LIMITS = DEFAULT_OPTIONS.limits
PARTIAL_EXIT = 3  # `job result --partial`: some chunks have no output
# Every field of a job request as a flag of `pangea job submit`: (flag, the field it sets, type, default, help).
OPTION_FLAGS: tuple[tuple[str, str, type, object, str], ...] = (
    ("--chunks-per-task", "chunks_per_task", int, DEFAULT_OPTIONS.chunks_per_task, "consecutive chunks per task"),
    ("--verify", "verification", str, str(DEFAULT_OPTIONS.verification), "hash | spot:K | replicas:N | adaptive"),
    ("--fuel", "limits.fuel_max", int, _LIMITS.fuel_max, "fuel budget per task"),
    ("--memory-mib", "limits.memory_bytes_max", int, _LIMITS.memory_bytes_max >> 20, "memory per chunk run, MiB"),
    ("--wall-time-s", "limits.wall_time_s", float, _LIMITS.wall_time_s, "wall time per chunk run"),
    ("--output-bytes-max", "limits.output_bytes_max", int, _LIMITS.output_bytes_max, "output bytes per chunk"),
    ("--deadline-s", "deadline_s", float, DEFAULT_OPTIONS.deadline_s,
     "the job must finish within this many seconds (tasks waiting for busy or unreachable workers wait until then)"),
    ("--retries-max", "retries_max", int, DEFAULT_OPTIONS.retries_max, "worker faults a task survives"),
    ("--escalations-max", "escalations_max", int, DEFAULT_OPTIONS.escalations_max,
     "times a task's fuel or memory is raised after it ran out of it"),
    ("--depth-max", "depth_max", int, DEFAULT_OPTIONS.depth_max, "how often a task may be split again by workers"),
    ("--queue-timeout-s", "queue_timeout_s", float, DEFAULT_OPTIONS.queue_timeout_s,
     "how long a task may wait when no known peer could ever take it (limits above every advert, all excluded)"),
    ("--fuel-per-chunk-estimate", "fuel_per_chunk_estimate", int, DEFAULT_OPTIONS.fuel_per_chunk_estimate,
     "expected fuel of one chunk, for placement (0: learnt from finished tasks)"),
    ("--job-id", "job_id", str, None, "the job's id (default: the peer picks one)"),
)


def add_parser(sub: Subparsers) -> None:
    job = sub.add_parser("job", help="submit and follow jobs")
    jsub = job.add_subparsers(dest="job_command", required=True, metavar="JOB_COMMAND")
    submit = jsub.add_parser("submit", help="submit a job")
    add_api_args(submit)
    submit.add_argument("--guest", required=True, help="built-in guest name or path to a .wasm module")
    submit.add_argument("--input", required=True, type=Path, help="input file ('-' for stdin)")
    submit.add_argument("--split", default="none", help="none | lines:N | bytes:N | count:N | framed")
    for flag, _, kind, default, text in OPTION_FLAGS:
        submit.add_argument(flag, type=kind, default=default, help=text + (" (default %(default)s)" if default else ""))
    submit.add_argument("--wait", action="store_true", help="wait for the result, showing progress")
    submit.add_argument("-o", "--output", type=Path, help="with --wait: write the outputs here")
    submit.add_argument("--check-receipts", action="store_true",
                        help="with --wait: before writing the outputs, verify every receipt offline against "
                             "what was submitted")
    for name, text in [("status", "a job's status"), ("wait", "wait for a job, showing progress"),
                       ("result", "a job's outputs"), ("explain", "why tasks are pending or failed"),
                       ("logs", "what each task printed"), ("cancel", "cancel a job")]:
        p = jsub.add_parser(name, help=text)
        add_api_args(p)
        p.add_argument("job_id")
        if name == "explain":
            p.add_argument("--all", action="store_true", help="the finished tasks' histories too")
        if name == "result":
            p.add_argument("-o", "--output", type=Path, help="write the outputs here (default: stdout)")
            p.add_argument("--framed", action="store_true", help="write them as one framed chunk list")
            p.add_argument("--partial", action="store_true",
                           help="write what is done even if some tasks failed; say which chunks are missing on "
                                f"stderr and exit with {PARTIAL_EXIT} (framed: a missing chunk is empty)")
    add_api_args(jsub.add_parser("list", help="jobs on this peer"))


def split_input(data: bytes, spec: str) -> list[bytes]:
    """The chunks of ``data`` for ``--split``; ConfigError("--split") for a bad spec or unsplittable input."""
    usage = f"{spec!r}: use none, lines:N, bytes:N, count:N or framed"
    name, colon, arg = spec.partition(":")
    if name in ("none", "framed") and colon:
        raise ConfigError("--split", f"{spec!r}: {name} takes no argument")
    if name == "none":
        return [data]
    if name == "framed":
        try:
            return unframe_chunks(data)
        except RemoteProtocolError as exc:
            raise ConfigError("--split", f"{spec!r}: the input is not a framed chunk list ({exc})") from None
    makers = {"lines": splits.lines, "bytes": splits.fixed_size, "count": splits.by_count}
    if name not in makers:
        raise ConfigError("--split", usage)
    try:
        return makers[name](data, int(arg))
    except ValueError:
        raise ConfigError("--split", usage) from None
    except ConfigError as exc:
        raise ConfigError("--split", f"{spec!r}: N {exc.problem}") from None


def run(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        return _run(args, client)


def _run(args: argparse.Namespace, client: Client) -> int:
    cmd = args.job_command
    if cmd == "list":
        for status in client.jobs()["jobs"]:
            print(_status_line(status))
        return 0
    if cmd == "submit":
        return _submit(args, client)
    if cmd == "status":
        print(json.dumps(client.job(args.job_id), indent=2) if args.json else _status_line(client.job(args.job_id)))
        return 0
    if cmd == "wait":
        status = follow(JobHandle(client, args.job_id, list, client.job(args.job_id)))
        return 0 if status["state"] == "done" else 1
    if cmd == "explain":
        doc = client.explain(args.job_id, done=args.all)
        if args.json:
            print(json.dumps(doc, indent=2))
        else:
            print(f"job {doc['job_id']}: {doc['state']}" + (f" ({doc['reason']})" if doc["reason"] else ""))
            for task_id, info in doc["tasks"].items():
                print(f"  {task_id}: {info['state']}")
                for reason in info["reasons"]:
                    print(f"    - {reason}")
        return 0
    if cmd == "cancel":
        print(_status_line(client.cancel(args.job_id)))
        return 0
    if cmd == "logs":
        doc = client.job_logs(args.job_id)
        if args.json:
            print(json.dumps(doc, indent=2))
        for task_id, entry in ({} if args.json else doc["tasks"]).items():
            print(f"== {task_id} (worker {entry['worker']})\n{entry['log']}", end="" if entry["log"].endswith("\n")
                  else "\n")
        return 0
    handle: JobHandle[list[bytes]] = JobHandle(client, args.job_id, list, client.job(args.job_id))
    if not args.partial:
        _write_outputs(handle.outputs(), args.output, args.framed)
        return 0
    outputs = handle.partial_outputs()
    missing = [i for i, o in enumerate(outputs) if o is None]
    # framed: a missing chunk is an empty one (the positions stay); raw: missing chunks are left out
    _write_outputs([o or b"" for o in outputs] if args.framed else [o for o in outputs if o is not None],
                   args.output, args.framed)
    if not missing:
        return 0
    print(f"partial result: {len(outputs) - len(missing)} of {len(outputs)} chunk(s); missing chunk(s) "
          f"{_ranges(missing)} (job {handle.last_result['state']}: {handle.last_result.get('reason', '')})",
          file=sys.stderr)
    return PARTIAL_EXIT


def _ranges(indexes: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``0-2, 5``."""
    runs: list[list[int]] = []
    for i in indexes:
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def job_options(args: argparse.Namespace) -> JobOptions:
    """The job options the flags of ``submit`` ask for; ConfigError naming the flag of a bad one."""
    try:
        as_int("--memory-mib", args.memory_mib, 1, MEMORY_BYTES_ABSOLUTE_MAX >> 20)  # said in the flag's unit
        limits = JobLimits(fuel_max=args.fuel, memory_bytes_max=args.memory_mib << 20, wall_time_s=args.wall_time_s,
                           output_bytes_max=args.output_bytes_max)
        return JobOptions(
            chunks_per_task=args.chunks_per_task, limits=limits, verification=VerificationPolicy.parse(args.verify),
            deadline_s=args.deadline_s, retries_max=args.retries_max, escalations_max=args.escalations_max,
            depth_max=args.depth_max, queue_timeout_s=args.queue_timeout_s,
            fuel_per_chunk_estimate=args.fuel_per_chunk_estimate,
        )
    except ConfigError as exc:
        raise flag_error(exc, args) from None


def flag_error(exc: ConfigError, args: argparse.Namespace) -> ConfigError:
    """``exc`` about a field of a job request, said of the flag that sets it (others as they are)."""
    for flag, name, _, _, _ in OPTION_FLAGS:
        if exc.key == name or exc.key.startswith(name + "."):
            value = getattr(args, flag.lstrip("-").replace("-", "_"))
            problem = exc.problem
            if exc.key != name and not problem.startswith(repr(value)):  # a part of it is out of range: say which
                problem = f"{value!r}: {exc.key.rpartition('.')[2]} {problem}"
            return ConfigError(flag, problem)
    return exc


def _submit(args: argparse.Namespace, client: Client) -> int:
    options = job_options(args)  # checked before the input and the module are uploaded
    try:
        data = sys.stdin.buffer.read() if str(args.input) == "-" else args.input.read_bytes()
    except OSError as exc:
        raise ConfigError("--input", f"cannot read {args.input}: {exc.strerror}") from None
    chunks = split_input(data, args.split)
    try:
        module = resolve_guest(args.guest)
    except ConfigError as exc:
        raise ConfigError("--guest", exc.problem) from None
    try:
        handle = submit_chunks(client, module, chunks, options, list, job_id=args.job_id)
    except ConfigError as exc:
        raise flag_error(exc, args) from None
    except ApiCallFailed as exc:  # the peer refused a field ("config KEY: problem"): name its flag
        key, sep, problem = str(exc).removeprefix("config ").partition(": ")
        if exc.status != 400 or not str(exc).startswith("config ") or not sep:
            raise
        raise flag_error(ConfigError(key, problem), args) from None
    status = handle.last_status
    print(f"job {status['job_id']} submitted: {len(chunks)} chunk(s) in {status['tasks_total']} task(s)",
          file=sys.stderr)
    if not args.wait:
        print(status["job_id"])
        return 0
    final = follow(handle)
    if final["state"] != "done":
        return 1
    if args.check_receipts:
        report = handle.verify()
        if not report.ok:
            raise PangeaError(f"job {handle.job_id}: the receipts do not verify, no output written: {report.summary()}")
        print(report.summary(), file=sys.stderr)
    _write_outputs(handle.outputs(), args.output, False)
    return 0


def follow(handle: JobHandle[Any]) -> dict[str, Any]:
    """Wait for the job, showing progress; print the reasons if it did not finish."""
    if sys.stderr.isatty():
        final = _follow_rich(handle)
    else:
        final = handle.wait(progress=lambda s: print(_status_line(s), file=sys.stderr))
    if final["state"] != "done":
        print(f"job {handle.job_id} {final['state']}: {final['reason']}", file=sys.stderr)
        print("run `pangea job explain " + handle.job_id + "` for the reasons of every task", file=sys.stderr)
    elif final["reason"]:  # done, but not every task got the check its policy asks for
        print(f"job {handle.job_id} done, warning: {final['reason']}", file=sys.stderr)
    return final


def _follow_rich(handle: JobHandle[Any]) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} tasks"),
               TextColumn("{task.fields[extra]}"), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        status = handle.last_status
        task = bar.add_task(f"job {handle.job_id}", total=status["tasks_total"], extra="")

        def update(s: dict[str, Any]) -> None:
            bar.update(task, completed=s["progress"]["done"], extra=f"fuel {s['fuel_used']:.3g}, "
                       f"{len(s['workers'])} worker(s)")

        update(status)
        return handle.wait(progress=update)


def _status_line(s: dict[str, Any]) -> str:
    p = s["progress"]
    eta = f", eta {s['eta_s']:.1f}s" if s.get("eta_s") else ""
    reason = f" ({s['reason']})" if s.get("reason") else ""
    return (f"{s['job_id']} {s['state']}: {p['done']}/{s['tasks_total']} done, {p['running']} running, "
            f"{p['verifying']} verifying, {p['pending']} pending, {p['failed']} failed; fuel {s['fuel_used']}, "
            f"{s['elapsed_s']:.1f}s{eta}{reason}")


def _write_outputs(outputs: list[bytes], path: Path | None, framed: bool) -> None:
    data = frame_chunks(outputs) if framed else b"".join(outputs)
    if path is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise PangeaError(f"cannot write {path}: {exc.strerror}") from None
    print(f"wrote {len(data)} bytes to {path}", file=sys.stderr)
