"""The `pangea` entry point: every command reaches the group that added it, a group's error is one line with
the right exit status, and parsing loads neither the peer, the sandbox nor the simulator."""

from __future__ import annotations

import argparse
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from pangea_p2p.cli import dashboard, demo, info, job, main, node, sim
from pangea_p2p.errors import ConfigError, PangeaError


def test_each_command_runs_the_group_that_added_it() -> None:
    parser = main.build_parser()
    expected = {"node": node, "id": info, "peers": info, "capacity": info, "health": info, "trust": info, "job": job,
                "dashboard": dashboard,
                "demo": demo, "sim": sim}
    argv = {"node": ["node"], "job": ["job", "list"], "sim": ["sim", "list"]}
    for command, group in expected.items():
        args = parser.parse_args(argv.get(command, [command]))
        assert args.run is group.run, command


def group(name: str, outcome: Any) -> SimpleNamespace:
    """A command group module in miniature: one command ``name`` whose run returns or raises ``outcome``."""
    ran: list[argparse.Namespace] = []

    def add_parser(sub: Any) -> None:
        sub.add_parser(name).add_argument("--flag")

    def run(args: argparse.Namespace) -> int:
        ran.append(args)
        if isinstance(outcome, BaseException):
            raise outcome
        return int(outcome)

    return SimpleNamespace(add_parser=add_parser, run=run, ran=ran)


def test_a_new_group_is_one_entry_in_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = group("frob", 7)
    monkeypatch.setattr(main, "GROUPS", (*main.GROUPS, extra))
    assert main.main(["frob", "--flag", "x"]) == 7
    (args,) = extra.ran
    assert (args.command, args.flag) == ("frob", "x")
    assert main.main(["id", "--api", "127.0.0.1:9"]) == 1  # the other groups still answer (no peer there)


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (ConfigError("--flag", "must be blue"), 2, "pangea: error: config --flag: must be blue"),
        (PangeaError("the peer went away"), 1, "pangea: error: the peer went away"),
        (ExceptionGroup("nursery", [ValueError("x"), PangeaError("inside a nursery")]), 1,
         "pangea: error: inside a nursery"),
    ],
)
def test_a_groups_error_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                    error: BaseException, code: int, line: str) -> None:
    monkeypatch.setattr(main, "GROUPS", (group("frob", error),))
    assert main.main(["frob"]) == code
    assert capsys.readouterr().err == line + "\n"


def test_a_bug_is_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(main, "GROUPS", (group("frob", KeyError("bug")),))
    with pytest.raises(KeyError):
        main.main(["frob"])


def test_python_m_lists_every_command_and_loads_only_what_the_command_needs() -> None:
    out = subprocess.run([sys.executable, "-m", "pangea_p2p", "--help"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    for command in ("node", "id", "peers", "capacity", "health", "trust", "job", "demo", "sim"):
        assert f"    {command} " in out, out
    heavy = ("pangea_p2p.node.peer", "pangea_p2p.sim", "pangea_p2p.demo", "wasmtime", "numpy", "matplotlib", "libp2p",
             "trio", "httpx")
    probe = ("import sys; from pangea_p2p.cli.main import build_parser; build_parser(); "
             f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert loaded.stdout.strip() == "[]"
