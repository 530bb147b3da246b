"""What a sandbox process gets from the peer, and what it gives up before it runs any guest.

The guest is confined by wasmtime (no imports: it can touch nothing but its own linear memory). These are
the layers under it, for the day wasmtime has a bug, applied to every sandbox process:

- Environment (``process_env``): only what Python needs to start (``PATH``, ``PYTHONHOME``,
  ``LD_LIBRARY_PATH``, ``TMPDIR``, ``SYSTEMROOT`` when set, and a ``PYTHONPATH`` that finds this package);
  the peer's other variables (tokens, key paths, proxies) never reach a worker.
- File descriptors: the pool starts workers with ``close_fds=True``: a worker inherits its stdin, stdout
  and stderr pipes and nothing else (no sockets, no key file).
- Resource limits (``restrict_process``, first thing in the worker): no core dumps (``RLIMIT_CORE`` 0/0:
  a crash must not write the worker's memory, which holds task inputs, to disk) and at most
  ``NOFILE_MAX`` open files (``RLIMIT_NOFILE``). Address space is not limited: wasmtime reserves several GiB
  of virtual memory per linear memory (guard regions), and the memory limit of each task bounds what
  a guest can really use.
- ``PR_SET_NO_NEW_PRIVS`` (Linux, through ``prctl`` with ctypes): the worker and anything it could start
  can never gain privileges (setuid binaries, file capabilities). Best effort: where it is unavailable,
  the worker logs why at debug level and goes on.

Hard limits are lowered, not only soft ones, so code in the worker cannot raise them again.
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource
import signal
import sys

log = logging.getLogger(__name__)

NOFILE_MAX = 64
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
ENV_PASSED = ("PATH", "PYTHONHOME", "LD_LIBRARY_PATH", "TMPDIR", "SYSTEMROOT")


def process_env(package_root: str, parent: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a sandbox process: ``ENV_PASSED`` from ``parent`` and a PYTHONPATH that finds us."""
    parent = dict(os.environ) if parent is None else parent
    env = {key: parent[key] for key in ENV_PASSED if key in parent}
    inherited = parent.get("PYTHONPATH")
    env["PYTHONPATH"] = package_root + (os.pathsep + inherited if inherited else "")
    return env


def _lower(limit: int, value: int) -> None:
    soft, hard = resource.getrlimit(limit)
    target = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(limit, (min(target, soft) if soft != resource.RLIM_INFINITY else target, target))


def _prctl(option: int, value: int, name: str) -> str | None:
    """``prctl(option, value)``; None on success, else why it could not be done."""
    if not sys.platform.startswith("linux"):
        return f"prctl is Linux only (this is {sys.platform})"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError) as exc:
        return f"prctl not found in the C library: {exc}"
    ulong = ctypes.c_ulong
    if prctl(ctypes.c_int(option), ulong(value), ulong(0), ulong(0), ulong(0)) != 0:
        return f"prctl({name}) failed: {os.strerror(ctypes.get_errno())}"
    return None


def _no_new_privs() -> str | None:
    return _prctl(PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS")


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (a compile process outliving a killed sandbox process would
    compile on, unwatched, until its CPU limit). Exits at once if the parent is already gone."""
    parent = os.getppid()
    problem = _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, "PR_SET_PDEATHSIG")
    if problem is not None:
        log.debug("sandbox process hardening not applied: %s", problem)
    if os.getppid() != parent:
        raise SystemExit("pangea compile process: the sandbox process that started it is gone")


def restrict_process() -> list[str]:
    """Apply the resource limits and no-new-privileges to this process; what could not be applied."""
    problems = []
    for name, limit, value in (("RLIMIT_CORE", resource.RLIMIT_CORE, 0),
                               ("RLIMIT_NOFILE", resource.RLIMIT_NOFILE, NOFILE_MAX)):
        try:
            _lower(limit, value)
        except (OSError, ValueError) as exc:
            problems.append(f"{name}: {exc}")
    problem = _no_new_privs()
    if problem is not None:
        problems.append(problem)
    for problem in problems:
        log.debug("sandbox process hardening not applied: %s", problem)
    return problems
