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
- Dying with the parent (``die_with_parent``), whatever killed the parent (SIGKILL included): a worker
  that outlived its peer would run its guest on, unwatched, up to the wall limit. Two mechanisms, either
  enough alone. (1) Linux: ``PR_SET_PDEATHSIG``. The kernel signals the child when the *thread* that forked
  it exits, which is the process's end only if that thread lives as long as the process. A compile process
  is forked by the thread that then waits for it (``compile_isolated`` is synchronous), so it takes SIGKILL.
  A sandbox process is forked by one of trio's cached worker threads, which exit after 10 s idle while the
  peer lives on: it takes ``LIFELINE_SIGNAL`` instead, blocked in every thread and awaited by a watchdog
  thread, which exits the process only if the parent *process* is gone (``getppid()`` is no longer the pid
  the parent wrote into ``PARENT_PID_ENV``). (2) Everywhere: a watchdog thread waits for the process's pipe
  to the parent to break (the parent holds its other end; POLLERR/POLLHUP when the parent dies), and where
  (1) is unavailable also re-checks ``getppid()`` every ``WATCH_PERIOD_S``. The watchdogs run while a guest
  runs (its wasmtime calls release the GIL) and wake only for these events, so they take no time from the
  guest or from the wall-time alarm. The expected parent pid comes from the parent, so a parent that died
  before the child could look is seen too.

Hard limits are lowered, not only soft ones, so code in the worker cannot raise them again.
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource
import select
import signal
import sys
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

NOFILE_MAX = 64
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
ENV_PASSED = ("PATH", "PYTHONHOME", "LD_LIBRARY_PATH", "TMPDIR", "SYSTEMROOT")
PARENT_PID_ENV = "PANGEA_PARENT_PID"
LIFELINE_SIGNAL = signal.SIGUSR2
WATCH_PERIOD_S = 0.5
EXIT_ORPHANED = 75


def process_env(package_root: str, parent: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a sandbox process: ``ENV_PASSED`` from ``parent``, a PYTHONPATH that finds us, and
    this process's pid (``PARENT_PID_ENV``, for ``die_with_parent``)."""
    parent = dict(os.environ) if parent is None else parent
    env = {key: parent[key] for key in ENV_PASSED if key in parent}
    inherited = parent.get("PYTHONPATH")
    env["PYTHONPATH"] = package_root + (os.pathsep + inherited if inherited else "")
    env[PARENT_PID_ENV] = str(os.getpid())
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


def _expected_parent() -> int:
    try:
        return int(os.environ.get(PARENT_PID_ENV, ""))
    except ValueError:
        return os.getppid()


def die_with_parent(lifeline_fd: int, *, forked_by_waiting_thread: bool) -> None:
    """End this process (``os._exit(EXIT_ORPHANED)``) as soon as its parent process dies (see the module's
    docstring). ``lifeline_fd``: an end of a pipe whose other end only the parent holds.
    ``forked_by_waiting_thread``: the thread that forked this process waits for it to end (then the parent
    death signal is SIGKILL). Call it first thing, before any thread is started."""
    parent = _expected_parent()
    signum = signal.SIGKILL if forked_by_waiting_thread else LIFELINE_SIGNAL
    if signum != signal.SIGKILL and hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signum})  # inherited by every thread started after this
    problem = _prctl(PR_SET_PDEATHSIG, signum, "PR_SET_PDEATHSIG")
    if problem is not None:
        log.debug("sandbox process hardening not applied: %s", problem)
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os._exit(EXIT_ORPHANED)
    if problem is None and signum != signal.SIGKILL:
        _start_watchdog(_await_death_signal, parent, signum)
    # Without the parent death signal, also look at getppid() now and then (a pipe end could have leaked).
    _start_watchdog(_await_broken_pipe, parent, lifeline_fd, None if problem is None else WATCH_PERIOD_S)


def _start_watchdog(target: Callable[..., None], *args: object) -> None:
    threading.Thread(target=target, args=args, name="pangea-lifeline", daemon=True).start()


def _await_death_signal(parent: int, signum: int) -> None:
    """A watchdog thread: exit when the parent death signal comes and the parent process is really gone."""
    while True:
        signal.sigwait({signum})
        if os.getppid() != parent:
            os._exit(EXIT_ORPHANED)


def _await_broken_pipe(parent: int, lifeline_fd: int, period_s: float | None) -> None:
    """A watchdog thread: exit when the pipe to the parent breaks (or, every ``period_s``, the parent is gone).
    It wakes only then: nothing taken from a running guest."""
    poller = select.poll()
    poller.register(lifeline_fd, 0)  # POLLERR, POLLHUP and POLLNVAL are always reported
    timeout_ms = None if period_s is None else period_s * 1000
    while not poller.poll(timeout_ms) and os.getppid() == parent:
        pass
    os._exit(EXIT_ORPHANED)


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
