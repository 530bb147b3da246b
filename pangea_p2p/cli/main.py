"""The ``pangea`` entry point: one parser made of the command groups in GROUPS, and one error policy.

    pangea node [--data-dir DIR] [--listen MA]... [--bootstrap MA]... [--config FILE] [--set key=value]...
    pangea id | peers | capacity | health | trust [--data-dir DIR | --api HOST:PORT] [--json]
    pangea dashboard [--data-dir DIR | --api HOST:PORT] [--no-open]
    pangea job submit | status | wait | result | explain | cancel | list ...
    pangea guest new | build | run ...
    pangea demo | sim ...

Every error is one line on stderr and a non-zero exit (2 for bad configuration or usage, 1 otherwise); no
tracebacks for bad input, nor when the reader of the output goes away (``pangea job explain J | head``). A new
command group is a module with ``add_parser`` and ``run`` (see the package docstring) and one entry in GROUPS.
Importing a group is cheap: what only some command needs (py-libp2p and trio for ``node``, the sandbox, the
simulator, numpy) is imported in its ``run``, so a client command starts in a fraction of the peer's time
(benchmarks/bench_cli.py; tests/cli/test_main.py checks what a client command loads).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from pangea_p2p import __version__
from pangea_p2p.cli import dashboard, demo, guest, info, job, node, sim
from pangea_p2p.errors import ConfigError, PangeaError

if TYPE_CHECKING:
    from pangea_p2p.cli.common import Subparsers


class CommandGroup(Protocol):
    """A module of this package that adds commands to ``pangea`` and runs them."""

    def add_parser(self, sub: Subparsers) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


GROUPS: tuple[CommandGroup, ...] = (node, info, dashboard, job, guest, demo, sim)


def build_parser(groups: Sequence[CommandGroup] | None = None) -> argparse.ArgumentParser:
    """``pangea``'s parser (of GROUPS unless ``groups`` says otherwise); each command's parsed arguments carry
    the ``run`` of the group that added it."""
    parser = argparse.ArgumentParser(prog="pangea", description="Pangea P2P: a peer-to-peer compute network.")
    parser.add_argument("--version", action="version", version=f"pangea {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS if groups is None else groups:
        before = set(sub.choices)
        group.add_parser(sub)
        for name in sub.choices.keys() - before:
            sub.choices[name].set_defaults(run=group.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        code = run(args)
        sys.stdout.flush()  # inside the try: a reader gone away is seen here, not as a traceback at exit
        return code
    except (PangeaError, BaseExceptionGroup) as exc:
        error = _first_pangea_error(exc)
        if error is None:
            raise
        print(f"pangea: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, ConfigError) else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader of our output is gone (`| head`): as Python's documentation of SIGPIPE recommends, point
        # stdout at devnull so that the flush at exit does not fail again, and exit 1 as Python does on EPIPE
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _first_pangea_error(exc: BaseException) -> PangeaError | None:
    """The error to show: errors raised inside trio nurseries arrive wrapped in exception groups."""
    if isinstance(exc, PangeaError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_pangea_error(inner)
            if found is not None:
                return found
    return None


if __name__ == "__main__":
    sys.exit(main())
