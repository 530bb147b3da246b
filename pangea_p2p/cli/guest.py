"""`pangea guest ...`: write, build and try your own execute step, with no peer running.

    pangea guest new wordlen --lang c|zig|rust|python   a template with the guest ABI already handled
    pangea guest build wordlen                           -> wordlen/wordlen.wasm (reproducible)
    pangea guest run wordlen/wordlen.wasm --input FILE   runs it here, in the sandbox: output, fuel, memory,
                                                         time, or the typed failure (exit 1)

``run`` takes a .wasm file, a built-in guest's name, or a Python step (``step.py`` or ``step.py:function``);
the input file is one chunk. The output goes to stdout (or ``-o FILE``; binary never to a terminal), the
step's log and the report to stderr. See ``pangea_p2p.guests.toolchain`` for how each language is built.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pangea_p2p.cli.output import write_output
from pangea_p2p.cli.parsing import LazyDefaultsParser
from pangea_p2p.errors import ConfigError
from pangea_p2p.guests.toolchain import LANGS, BuildFailed, build_guest, new_guest


def _run_defaults() -> dict[str, object]:
    """The defaults of `guest run`: a job's (the core's job model is loaded only to parse `guest run`)."""
    from pangea_p2p.core.jobs.model import JobLimits

    limits = JobLimits()
    return {"fuel": limits.fuel_max, "memory_mib": limits.memory_bytes_max >> 20, "wall_time_s": limits.wall_time_s}


def add_parser(subparsers: Any) -> None:
    guest = subparsers.add_parser("guest", help="write, build and try your own execute step")
    gsub = guest.add_subparsers(dest="guest_command", required=True, metavar="GUEST_COMMAND",
                                parser_class=LazyDefaultsParser)
    new = gsub.add_parser("new", help="write a template guest in a new directory NAME")
    new.add_argument("name", type=Path, help="the directory to create; its last part is the guest's name")
    new.add_argument("--lang", default="c", choices=LANGS)
    build = gsub.add_parser("build", help="build the guest in DIR into DIR/NAME.wasm")
    build.add_argument("dir", type=Path)
    run = gsub.add_parser("run", help="run a guest here on one input, in the sandbox")
    run.add_argument("module", help="a .wasm file, a built-in guest, or step.py[:function]")
    run.add_argument("--input", required=True, help="input file ('-' for stdin): one chunk")
    run.add_argument("-o", "--output", type=Path, help="write the output here (default: stdout)")
    run.defaults = _run_defaults
    run.add_argument("--fuel", type=int, help="fuel budget")
    run.add_argument("--memory-mib", type=int, help="memory, MiB")
    run.add_argument("--wall-time-s", type=float, help="wall time")


def run(args: argparse.Namespace) -> int:
    from pangea_p2p.core.cid import cid_of
    from pangea_p2p.sdk.job import resolve_guest  # the sandbox (wasmtime) only for the commands that need it

    if args.guest_command == "new":
        for path in new_guest(args.name, args.lang):
            print(f"wrote {path}")
        hint = (f"pangea guest run {args.name / args.name.name}.py --input FILE" if args.lang == "python"
                else f"pangea guest build {args.name}")
        print(f"next: {hint}")
        return 0
    if args.guest_command == "build":
        try:
            path = build_guest(args.dir)
        except BuildFailed as exc:
            print(exc.output.rstrip(), file=sys.stderr)
            raise
        if path.suffix == ".py":
            print(f"{path} is a Python step: nothing to build (step {cid_of(resolve_guest(str(path)))})")
            return 0
        data = path.read_bytes()
        print(f"built {path} ({len(data)} bytes, {cid_of(data)})")
        return 0
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from pangea_p2p.core.cid import cid_of
    from pangea_p2p.core.jobs.model import JobLimits
    from pangea_p2p.sandbox import SandboxLimits
    from pangea_p2p.sandbox.local import local_executor
    from pangea_p2p.sdk.job import resolve_guest

    module = resolve_guest(args.module)
    try:
        data = sys.stdin.buffer.read() if args.input == "-" else Path(args.input).read_bytes()
    except OSError as exc:
        raise ConfigError("--input", f"cannot read {args.input}: {exc.strerror}") from None
    limits = SandboxLimits(fuel_max=args.fuel, memory_bytes_max=args.memory_mib << 20,
                           wall_time_s=args.wall_time_s, output_bytes_max=JobLimits().output_bytes_max)
    with local_executor() as executor:
        result = executor.run(cid_of(module), module, data, limits)
    if result.log:
        sys.stderr.write(result.log.decode("utf-8", errors="replace"))
    r = result.report
    figures = (f"fuel {r.fuel_used}, memory {r.peak_memory_bytes} bytes, {r.wall_time_s * 1e3:.1f} ms "
               "(compilation excluded)")
    if result.failure is not None:
        f = result.failure
        kind = f.kind.name.lower() + (f" ({f.trap_kind})" if f.trap_kind else "")
        print(f"failed: {kind}: {f.message}; {figures}", file=sys.stderr)
        return 1
    output = result.output or b""
    write_output(output, args.output, what="the guest's output", hint="")
    print(f"ok: {len(output)} bytes of output; {figures}", file=sys.stderr)
    return 0
