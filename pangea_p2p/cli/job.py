"""`pangea job ...`: submit a job to the local peer and follow it.

    pangea job submit --guest wordcount_map --input corpus.txt --split lines:1000 --verify spot:1 --wait -o counts.tsv
    pangea job status JOB | wait JOB | result JOB [-o FILE] [--format F] | explain JOB | logs JOB | cancel JOB | list

Every option of a job request (``JobOptions``, pangea_p2p/core/jobs/model.py, and the job id) is a flag of
``submit`` (OPTION_FLAGS), with the same defaults as the SDK's ``Job``; a bad value is refused before anything is
uploaded, naming the flag. ``submit`` goes through the SDK's ``submit_chunks`` like ``Job.submit``, so with
``--wait --check-receipts`` the receipts are checked offline against what this command submitted before the
outputs are written. Progress is a rich progress bar on a terminal, otherwise a plain line every
PROGRESS_LINE_INTERVAL_S of the job's time at most (and its last status); its ETA comes from the rate tasks were
measured to finish at (``EtaEstimator``).

A JOB argument may be any unique prefix of a job id, as in git (``resolve_job_id``). The outputs of a built-in
guest that has a decoder (``pangea_p2p.sdk.decode``: wordcount as tsv or json, sha256 as hex, matmul as npy) are
written decoded unless ``--format raw``; binary data never goes to a terminal (``output.write_output``).
``--json`` makes stdout one JSON document on every command (a result's bytes as base64).
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pangea_p2p.cli.common import add_api_args, client_from_args
from pangea_p2p.cli.output import print_json, print_table, write_output
from pangea_p2p.cli.parsing import LazyDefaultsParser
from pangea_p2p.errors import ConfigError, PangeaError, RemoteProtocolError
from pangea_p2p.sdk.decode import Decoder, decoder_for, parse_shape

# Imported where used: the core's job model, the job DSL and the sandbox's types are not needed to parse the
# command line, nor by `job status` (a client command starts in a fraction of the time without them).
if TYPE_CHECKING:
    from pangea_p2p.cli.common import Subparsers
    from pangea_p2p.core.jobs.model import JobOptions
    from pangea_p2p.sdk.client import Client
    from pangea_p2p.sdk.job import JobHandle

PARTIAL_EXIT = 3  # `job result --partial`: some chunks have no output
PROGRESS_LINE_INTERVAL_S = 5.0  # outside a terminal, a progress line at most this often (in the job's time)
ETA_WINDOW_S = 30.0  # the ETA is from the rate tasks finished at over about this much of the job's recent time
FORMATS = ("raw", "framed", "tsv", "json", "hex", "npy")
# Every field of a job request as a flag of `pangea job submit`: (flag, the field it sets, type, help); the
# defaults are the SDK's (``option_defaults``).
OPTION_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--chunks-per-task", "chunks_per_task", int, "consecutive chunks per task"),
    ("--verify", "verification", str, "hash | spot:K | replicas:N | adaptive"),
    ("--fuel", "limits.fuel_max", int, "fuel budget per task"),
    ("--memory-mib", "limits.memory_bytes_max", int, "memory per chunk run, MiB"),
    ("--wall-time-s", "limits.wall_time_s", float, "wall time per chunk run"),
    ("--output-bytes-max", "limits.output_bytes_max", int, "output bytes per chunk"),
    ("--deadline-s", "deadline_s", float,
     "the job must finish within this many seconds (tasks waiting for busy or unreachable workers wait until then)"),
    ("--retries-max", "retries_max", int, "worker faults a task survives"),
    ("--escalations-max", "escalations_max", int, "times a task's fuel or memory is raised after it ran out of it"),
    ("--depth-max", "depth_max", int, "how often a task may be split again by workers"),
    ("--queue-timeout-s", "queue_timeout_s", float,
     "how long a task may wait when no known peer could ever take it (limits above every advert, all excluded)"),
    ("--fuel-per-chunk-estimate", "fuel_per_chunk_estimate", int,
     "expected fuel of one chunk, for placement (0: learnt from finished tasks)"),
    ("--job-id", "job_id", str, "the job's id (default: the peer picks one)"),
)


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def option_defaults() -> dict[str, object]:
    """The default of each flag of OPTION_FLAGS, by dest: the SDK's ``DEFAULT_OPTIONS`` (in the flag's unit)."""
    from pangea_p2p.core.jobs.model import DEFAULT_OPTIONS

    values: dict[str, object] = {"verify": str(DEFAULT_OPTIONS.verification), "job_id": None}
    for flag, field, _, _ in OPTION_FLAGS:
        if _dest(flag) not in values:
            value: object = DEFAULT_OPTIONS
            for part in field.split("."):
                value = getattr(value, part)
            values[_dest(flag)] = value
    values["memory_mib"] = DEFAULT_OPTIONS.limits.memory_bytes_max >> 20
    return values


def add_parser(sub: Subparsers) -> None:
    job = sub.add_parser("job", help="submit and follow jobs")
    jsub = job.add_subparsers(dest="job_command", required=True, metavar="JOB_COMMAND",
                              parser_class=LazyDefaultsParser)
    submit = jsub.add_parser("submit", help="submit a job")
    submit.defaults = option_defaults
    add_api_args(submit)
    submit.add_argument("--guest", required=True, help="built-in guest name or path to a .wasm module")
    submit.add_argument("--input", required=True, type=Path, help="input file ('-' for stdin)")
    submit.add_argument("--split", default="none", help="none | lines:N | bytes:N | count:N | framed")
    for flag, _, kind, text in OPTION_FLAGS:
        submit.add_argument(flag, type=kind, help=text)
    submit.add_argument("--wait", action="store_true", help="wait for the result, showing progress")
    submit.add_argument("-o", "--output", type=Path, help="with --wait: write the outputs here")
    _add_format_args(submit)
    submit.add_argument("--check-receipts", action="store_true",
                        help="with --wait: before writing the outputs, verify every receipt offline against "
                             "what was submitted")
    for name, text in [("status", "a job's status"), ("wait", "wait for a job, showing progress"),
                       ("result", "a job's outputs"), ("explain", "why tasks are pending or failed"),
                       ("logs", "what each task printed"), ("cancel", "cancel a job")]:
        p = jsub.add_parser(name, help=text)
        add_api_args(p)
        p.add_argument("job_id", metavar="JOB", help="a job id, or a unique prefix of one")
        if name == "explain":
            p.add_argument("--all", action="store_true", help="the finished tasks' histories too")
        if name == "result":
            p.add_argument("-o", "--output", type=Path, help="write the outputs here (default: stdout)")
            _add_format_args(p)
            p.add_argument("--framed", action="store_true", help="write them as one framed chunk list (--format "
                                                                 "framed)")
            p.add_argument("--partial", action="store_true",
                           help="write what is done even if some tasks failed; say which chunks are missing on "
                                f"stderr and exit with {PARTIAL_EXIT} (framed: a missing chunk is empty)")
    add_api_args(jsub.add_parser("list", help="jobs on this peer"))


def _add_format_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=FORMATS,
                   help="how to write the outputs: the guest's decoded form by default (wordcount_map and "
                        "wordcount_reduce: tsv or json; sha256: hex or json; matmul_block: npy or json), else raw "
                        "(the outputs one after the other); framed keeps them apart")
    p.add_argument("--shape", type=_shape, metavar="ROWSxCOLS",
                   help="matmul_block: the product's shape, when its blocks do not tell")


def _shape(text: str) -> tuple[int, int]:
    try:
        return parse_shape(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.problem) from None  # argparse's usage error, exit 2


def split_input(data: bytes, spec: str) -> list[bytes]:
    """The chunks of ``data`` for ``--split``; ConfigError("--split") for a bad spec or unsplittable input."""
    from pangea_p2p.core.chunks import unframe_chunks
    from pangea_p2p.sdk import splits

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
        return _list(client.jobs()["jobs"], args.json)
    if cmd == "submit":
        return _submit(args, client)
    job_id = resolve_job_id(client, args.job_id)
    if cmd in ("status", "cancel"):
        status = client.job(job_id) if cmd == "status" else client.cancel(job_id)
        if args.json:
            print_json(status)
        else:
            print(_status_line(status))
        return 0
    from pangea_p2p.sdk.job import JobHandle

    if cmd == "wait":
        status = follow(JobHandle(client, job_id, list, client.job(job_id)))
        if args.json:
            print_json(status)
        return 0 if status["state"] == "done" else 1
    if cmd == "explain":
        doc = client.explain(job_id, done=args.all)
        if args.json:
            print_json(doc)
        else:
            print(f"job {doc['job_id']}: {doc['state']}" + (f" ({doc['reason']})" if doc["reason"] else ""))
            for task_id, info in doc["tasks"].items():
                print(f"  {task_id}: {info['state']}")
                for reason in info["reasons"]:
                    print(f"    - {reason}")
        return 0
    if cmd == "logs":
        doc = client.job_logs(job_id)
        if args.json:
            print_json(doc)
        for task_id, entry in ({} if args.json else doc["tasks"]).items():
            print(f"== {task_id} (worker {entry['worker']})\n{entry['log']}", end="" if entry["log"].endswith("\n")
                  else "\n")
        return 0
    handle: JobHandle[list[bytes]] = JobHandle(client, job_id, list, client.job(job_id))
    if not args.partial:
        _write_result(handle, handle.outputs(), args, as_json=args.json)
        return 0
    outputs = handle.partial_outputs()
    missing = [i for i, o in enumerate(outputs) if o is None]
    if args.json:
        _print_result_json(handle, outputs, None)
    else:  # framed: a missing chunk is an empty one (the positions stay); raw: missing chunks are left out
        fmt = _format(args, None)
        if fmt not in ("raw", "framed"):
            raise ConfigError("--format", f"{fmt}: a partial result is written raw or framed (--json: base64)")
        _write_outputs([o or b"" for o in outputs] if fmt == "framed" else [o for o in outputs if o is not None],
                       args.output, fmt == "framed", f"job {job_id}'s partial result")
    if not missing:
        return 0
    print(f"partial result: {len(outputs) - len(missing)} of {len(outputs)} chunk(s); missing chunk(s) "
          f"{_ranges(missing)} (job {handle.last_result['state']}: {handle.last_result.get('reason', '')})",
          file=sys.stderr)
    return PARTIAL_EXIT


def resolve_job_id(client: Client, given: str) -> str:
    """The id of the one job on the peer that ``given`` is the id of, or a prefix of (as git takes commits);
    PangeaError when there is none, or when several match (naming them)."""
    if not given:
        raise ConfigError("JOB", "is empty: give a job id or a prefix of one")
    ids = [str(s["job_id"]) for s in client.jobs()["jobs"]]
    if given in ids:
        return given
    found = sorted(i for i in ids if i.startswith(given))
    if len(found) == 1:
        return found[0]
    if not found:
        raise PangeaError(f"no job {given if given.isprintable() else repr(given)} on this peer")
    shown = ", ".join(found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "")
    raise PangeaError(f"job id prefix {given!r} is ambiguous: {shown}")


def _list(jobs: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        print_json({"jobs": jobs})
        return 0
    rows = [(s["job_id"], s["state"], f"{s['progress']['done']}/{s['tasks_total']}", s["progress"]["running"],
             s["progress"]["failed"], s["fuel_used"], f"{s['elapsed_s']:.1f}") for s in jobs]
    print_table(("JOB", "STATE", "DONE", "RUNNING", "FAILED", "FUEL", "ELAPSED_S"), rows, "no jobs on this peer")
    return 0


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
    from pangea_p2p.core.jobs.model import MEMORY_BYTES_ABSOLUTE_MAX, JobLimits, JobOptions, VerificationPolicy, as_int

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
    for flag, name, _, _ in OPTION_FLAGS:
        if exc.key == name or exc.key.startswith(name + "."):
            value = getattr(args, _dest(flag))
            problem = exc.problem
            if exc.key != name and not problem.startswith(repr(value)):  # a part of it is out of range: say which
                problem = f"{value!r}: {exc.key.rpartition('.')[2]} {problem}"
            return ConfigError(flag, problem)
    return exc


def _submit(args: argparse.Namespace, client: Client) -> int:
    from pangea_p2p.core.cid import cid_of
    from pangea_p2p.sdk.client import ApiCallFailed
    from pangea_p2p.sdk.job import resolve_guest, submit_chunks

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
    if args.wait:  # how the outputs will be written: checked before anything runs
        _format(args, decoder_for(cid_of(module)), args.json and args.output is None)
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
        if args.json:
            print_json(status)
        else:
            print(status["job_id"])
        return 0
    final = follow(handle)
    if final["state"] != "done":
        if args.json:
            print_json(final)
        return 1
    if args.check_receipts:
        report = handle.verify()
        if not report.ok:
            raise PangeaError(f"job {handle.job_id}: the receipts do not verify, no output written: {report.summary()}")
        print(report.summary(), file=sys.stderr)
    # --json with -o: the outputs go to the file, the final status to stdout
    _write_result(handle, handle.outputs(), args, as_json=args.json and args.output is None)
    if args.json and args.output is not None:
        print_json(final)
    return 0


def _format(args: argparse.Namespace, decoder: Decoder | None, as_json: bool = False) -> str:
    """The format ``--format`` (or ``--framed``) asks for, else the decoder's default, else raw; ConfigError for
    one the job's guest does not have, or one given with ``--json``."""
    framed = getattr(args, "framed", False)
    if as_json and (args.format is not None or framed):
        raise ConfigError("--json", "prints the result as one JSON document: leave out --format and --framed")
    if framed:
        if args.format not in (None, "framed"):
            raise ConfigError("--framed", f"is --format framed, not --format {args.format}")
        return "framed"
    fmt = str(args.format) if args.format is not None else decoder.default if decoder is not None else "raw"
    if fmt not in ("raw", "framed"):
        if decoder is None:
            raise ConfigError("--format", f"{fmt}: the job's module is not a built-in guest with a decoder; use raw "
                                          "or framed")
        decoder.check_format(fmt)
    return fmt


def _write_result(handle: JobHandle[Any], outputs: list[bytes], args: argparse.Namespace, *, as_json: bool) -> None:
    """The outputs of a done job as ``args`` ask: as one JSON document, in a decoded format, raw or framed."""
    module_cid = handle.last_result.get("module_cid") or handle.module_cid or ""
    decoder = decoder_for(module_cid)
    fmt = _format(args, decoder, as_json)
    if as_json:
        _print_result_json(handle, outputs, decoder, args.shape)
        return
    what = f"job {handle.job_id}'s result"
    if fmt in ("raw", "framed"):
        _write_outputs(outputs, args.output, fmt == "framed", what, decoder)
        return
    assert decoder is not None  # _format said so
    write_output(decoder.render(outputs, fmt, args.shape), args.output, what=what, hint="")


def _print_result_json(handle: JobHandle[Any], outputs: Sequence[bytes | None], decoder: Decoder | None,
                       shape: tuple[int, int] | None = None) -> None:
    doc: dict[str, Any] = {"job_id": handle.job_id, "state": handle.last_result.get("state", "done"),
                           "guest": decoder.guest if decoder is not None else None}
    if decoder is not None and all(o is not None for o in outputs):
        doc["result"] = decoder.to_json([o for o in outputs if o is not None], shape)
    else:
        doc["outputs_base64"] = [None if o is None else base64.b64encode(o).decode() for o in outputs]
    print_json(doc)


def follow(handle: JobHandle[Any]) -> dict[str, Any]:
    """Wait for the job, showing progress; print the reasons if it did not finish."""
    if sys.stderr.isatty():
        final = _follow_rich(handle)
    else:
        lines = ProgressLines(handle.last_status)
        final = handle.wait(progress=lines.update)
        lines.finish(final)
    if final["state"] != "done":
        print(f"job {handle.job_id} {final['state']}: {final['reason']}", file=sys.stderr)
        print("run `pangea job explain " + handle.job_id + "` for the reasons of every task", file=sys.stderr)
    elif final["reason"]:  # done, but not every task got the check its policy asks for
        print(f"job {handle.job_id} done, warning: {final['reason']}", file=sys.stderr)
    return final


class EtaEstimator:
    """The seconds a job has left, from the rate its tasks were measured to finish at: tasks done over the last
    ``window_s`` of the job's time (its status's ``elapsed_s``), at least the last two different counts."""

    def __init__(self, window_s: float = ETA_WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: list[tuple[float, int]] = []  # (elapsed_s, tasks done), oldest first

    def add(self, status: dict[str, Any]) -> None:
        t, done = float(status["elapsed_s"]), int(status["progress"]["done"])
        if self._samples and t < self._samples[-1][0]:
            return  # an older answer than one already seen
        self._samples.append((t, done))
        # keep one sample at or before the window's start, so the rate spans the whole window
        while len(self._samples) > 2 and self._samples[1][0] <= t - self.window_s:
            del self._samples[0]

    def eta_s(self, total: int) -> float | None:
        """None until tasks were seen to finish."""
        if len(self._samples) < 2:
            return None
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        if d1 <= d0 or t1 <= t0:
            return None
        return (total - d1) * (t1 - t0) / (d1 - d0)


class ProgressLines:
    """Progress as plain lines on stderr, for logs and pipes: the first status seen, then at most one line every
    ``interval_s`` of the job's time, and the final one (no line is repeated)."""

    def __init__(self, first: dict[str, Any], interval_s: float = PROGRESS_LINE_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.eta = EtaEstimator()
        self.eta.add(first)
        self._printed_at: float | None = None
        self._last = ""

    def update(self, status: dict[str, Any]) -> None:
        self.eta.add(status)
        t = float(status["elapsed_s"])
        if status["state"] == "running" and self._printed_at is not None and t - self._printed_at < self.interval_s:
            return
        self._print(status)
        self._printed_at = t

    def finish(self, final: dict[str, Any]) -> None:
        self._print(final)

    def _print(self, status: dict[str, Any]) -> None:
        line = _status_line(status, self.eta.eta_s(int(status["tasks_total"])))
        if line != self._last:
            print(line, file=sys.stderr, flush=True)
            self._last = line


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


def _status_line(s: dict[str, Any], eta_s: float | None = None) -> str:
    """One line of a job's status; ``eta_s`` as measured by the caller, else the peer's."""
    p = s["progress"]
    eta = eta_s if eta_s is not None else s.get("eta_s")
    eta_text = f", eta {eta:.1f}s" if eta and s["state"] == "running" else ""
    reason = f" ({s['reason']})" if s.get("reason") else ""
    return (f"{s['job_id']} {s['state']}: {p['done']}/{s['tasks_total']} done, {p['running']} running, "
            f"{p['verifying']} verifying, {p['pending']} pending, {p['failed']} failed; fuel {s['fuel_used']}, "
            f"{s['elapsed_s']:.1f}s{eta_text}{reason}")


def _write_outputs(outputs: list[bytes], path: Path | None, framed: bool, what: str,
                   decoder: Decoder | None = None) -> None:
    from pangea_p2p.core.chunks import frame_chunks

    data = frame_chunks(outputs) if framed else b"".join(outputs)
    hint = f"decode it with --format {' or '.join(decoder.formats)}" if decoder is not None else ""
    write_output(data, path, what=what, hint=hint)
