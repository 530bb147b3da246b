"""`pangea job ...`: submit a job to the local peer and follow it.

    pangea job submit --guest wordcount_map --input corpus.txt --split lines:1000 --verify spot:1 --wait -o out.bin
    pangea job status JOB | wait JOB | result JOB [-o FILE] | explain JOB | logs JOB | cancel JOB | list

Progress is a rich progress bar on a terminal and one plain line per change otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pangea_p2p.core.chunks import frame_chunks, unframe_chunks
from pangea_p2p.core.jobs.model import VerificationPolicy
from pangea_p2p.errors import ConfigError, PangeaError, RemoteProtocolError
from pangea_p2p.sdk import splits
from pangea_p2p.sdk.client import Client
from pangea_p2p.sdk.job import JobHandle, Limits, resolve_guest

_DEFAULTS = Limits()


def add_job_parser(sub: Any, api_args: Callable[[argparse.ArgumentParser], None]) -> None:
    job = sub.add_parser("job", help="submit and follow jobs")
    jsub = job.add_subparsers(dest="job_command", required=True, metavar="JOB_COMMAND")
    submit = jsub.add_parser("submit", help="submit a job")
    api_args(submit)
    submit.add_argument("--guest", required=True, help="built-in guest name or path to a .wasm module")
    submit.add_argument("--input", required=True, type=Path, help="input file ('-' for stdin)")
    submit.add_argument("--split", default="none", help="none | lines:N | bytes:N | count:N | framed")
    submit.add_argument("--chunks-per-task", type=int, default=1)
    submit.add_argument("--verify", default="hash", help="hash | spot:K | replicas:N | adaptive")
    submit.add_argument("--fuel", type=int, default=_DEFAULTS.fuel_max, help="fuel budget per task")
    submit.add_argument("--memory-mib", type=int, default=_DEFAULTS.memory_bytes_max >> 20)
    submit.add_argument("--wall-time-s", type=float, default=_DEFAULTS.wall_time_s)
    submit.add_argument("--deadline-s", type=float, help="the job must finish within this many seconds")
    submit.add_argument("--wait", action="store_true", help="wait for the result, showing progress")
    submit.add_argument("-o", "--output", type=Path, help="with --wait: write the outputs here")
    for name, text in [("status", "a job's status"), ("wait", "wait for a job, showing progress"),
                       ("result", "a job's outputs"), ("explain", "why tasks are pending or failed"),
                       ("logs", "what each task printed"), ("cancel", "cancel a job")]:
        p = jsub.add_parser(name, help=text)
        api_args(p)
        p.add_argument("job_id")
        if name == "explain":
            p.add_argument("--all", action="store_true", help="the finished tasks' histories too")
        if name == "result":
            p.add_argument("-o", "--output", type=Path, help="write the outputs here (default: stdout)")
            p.add_argument("--framed", action="store_true", help="write them as one framed chunk list")
    api_args(jsub.add_parser("list", help="jobs on this peer"))


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


def run_job_command(args: argparse.Namespace, client: Client) -> int:
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
    _write_outputs(handle.outputs(), args.output, args.framed)
    return 0


def _submit(args: argparse.Namespace, client: Client) -> int:
    try:  # checked here, before the input and the module are uploaded, and named as the option
        VerificationPolicy.parse(args.verify)
    except ConfigError as exc:
        problem = exc.problem
        if not problem.startswith(repr(args.verify)):  # a value out of range: name which one
            problem = f"{args.verify!r}: {exc.key.rpartition('.')[2]} {problem}"
        raise ConfigError("--verify", problem) from None
    try:
        data = sys.stdin.buffer.read() if str(args.input) == "-" else args.input.read_bytes()
    except OSError as exc:
        raise ConfigError("--input", f"cannot read {args.input}: {exc.strerror}") from None
    chunks = split_input(data, args.split)
    try:
        module = resolve_guest(args.guest)
    except ConfigError as exc:
        raise ConfigError("--guest", exc.problem) from None
    request: dict[str, Any] = {
        "module_cid": client.upload_block(module),
        "chunk_cids": client.upload_chunks(frame_chunks(chunks)),
        "chunks_per_task": max(1, min(args.chunks_per_task, len(chunks))),
        "limits": {"fuel_max": args.fuel, "memory_bytes_max": args.memory_mib << 20, "wall_time_s": args.wall_time_s},
        "verification": args.verify,
    }
    if args.deadline_s is not None:
        request["deadline_s"] = args.deadline_s
    status = client.submit_job(request)
    print(f"job {status['job_id']} submitted: {len(chunks)} chunk(s) in {status['tasks_total']} task(s)",
          file=sys.stderr)
    if not args.wait:
        print(status["job_id"])
        return 0
    handle: JobHandle[list[bytes]] = JobHandle(client, status["job_id"], list, status)
    final = follow(handle)
    if final["state"] != "done":
        return 1
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
