"""Compiling a module in a process of its own, bounded in memory and time: the sandbox's defence against
compile bombs.

    serialized = compile_isolated(config, module_bytes)     # native code, for Module.deserialize
    python -m pangea_p2p.sandbox.compiler CONFIG_JSON      # the compile process: module on stdin

wasmtime's compiler is the part of the sandbox an attacker can make expensive for free (a new module, a new
content id): tens of thousands of tiny functions, or one pathological function, cost seconds and hundreds of
MiB, and what the allocator took is not given back to the system when compilation ends. So no sandbox
process compiles untrusted bytes itself. Each compilation runs in a fresh ``python -m
pangea_p2p.sandbox.compiler`` process that

- gets the scrubbed environment and no inherited descriptors of every sandbox process (``harden``), gives
  up core dumps and new privileges, and dies with its parent, whatever killed it (``harden.die_with_parent``:
  ``PR_SET_PDEATHSIG`` with SIGKILL, and a watchdog on its stdout pipe);
- runs under ``RLIMIT_AS`` = ``compile_memory_bytes_max`` (no linear memory exists while compiling, so an
  address-space cap is exact here) and ``RLIMIT_CPU`` just above ``compile_time_s_max``;
- is killed by its parent at ``compile_time_s_max`` of wall time;
- writes the serialized module (``Module.serialize()``) to stdout and exits, which returns all of its
  memory to the system.

The parent loads the native code with ``Module.deserialize`` on an engine of the same settings: code this
node's own compile process produced, like the disk cache (see ``engine``). Outcomes: the bytes, or
``InvalidModule`` (wasmtime refused the module: a one-line reason), or ``Rejected`` when this node's compile
budget was not enough (time or memory; another node may have more), or ``Rejected`` when the compiler died
another way (named by its signal). Start-up costs ~0.1 s per compilation; modules are compiled once per
sandbox process and cached (in memory and, when configured, on disk).
"""

from __future__ import annotations

import contextlib
import math
import resource
import subprocess
import sys
from pathlib import Path

import pangea_p2p
from pangea_p2p.errors import InvalidModule, Rejected, SandboxError
from pangea_p2p.sandbox.config import SandboxConfig
from pangea_p2p.sandbox.harden import die_with_parent, process_env, restrict_process

EXIT_INVALID = 3
EXIT_MEMORY = 4
STDERR_TAIL_CHARS = 300


def compile_isolated(config: SandboxConfig, module: bytes) -> bytes:
    """The serialized native code of ``module`` (already checked by ``modshape``); a SandboxError if refused."""
    root = str(Path(pangea_p2p.__file__).resolve().parents[1])
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pangea_p2p.sandbox.compiler", config.to_json()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
            env=process_env(root))
    except OSError as exc:
        raise Rejected(f"cannot start the compile process: {exc.strerror}") from None
    try:
        out, err = proc.communicate(module, timeout=config.compile_time_s_max)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise _out_of_time(config) from None
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return _outcome(config, proc.returncode, out, err.decode(errors="replace"))


def _out_of_time(config: SandboxConfig) -> Rejected:
    return Rejected(f"module did not compile within {config.compile_time_s_max:g} s on this node "
                    "(sandbox.compile_time_s_max)")


def _out_of_memory(config: SandboxConfig) -> Rejected:
    return Rejected(f"compiling the module needed more than the {config.compile_memory_bytes_max >> 20} MiB this "
                    "node allows (sandbox.compile_memory_bytes_max)")


def _outcome(config: SandboxConfig, code: int, out: bytes, err: str) -> bytes:
    tail = " ".join(err.split())[-STDERR_TAIL_CHARS:]
    if code == 0:
        return out
    if code == EXIT_INVALID:
        raise InvalidModule(tail or "invalid WebAssembly module")
    if code == EXIT_MEMORY or "memory allocation" in err or "MemoryError" in err:
        raise _out_of_memory(config)
    if code < 0 and -code in (9, 24):  # SIGKILL from RLIMIT_CPU's hard limit, SIGXCPU at its soft limit
        raise _out_of_time(config)
    how = f"killed by signal {-code}" if code < 0 else f"exit {code}"
    raise Rejected(f"the compile process failed ({how}){': ' + tail if tail else ''}")


def _limit_self(config: SandboxConfig) -> None:
    die_with_parent(sys.stdout.fileno(), forked_by_waiting_thread=True)  # compile_isolated waits for us
    restrict_process()
    cap = config.compile_memory_bytes_max
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    cpu_s = math.ceil(config.compile_time_s_max) + 1
    with contextlib.suppress(ValueError, OSError):  # a lower hard limit already in place stays
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m pangea_p2p.sandbox.compiler CONFIG_JSON < module.wasm", file=sys.stderr)
        return 2
    config = SandboxConfig.from_json(args[0])
    _limit_self(config)
    module = sys.stdin.buffer.read()
    try:
        from pangea_p2p.sandbox.engine import compile_module, make_engine

        serialized = compile_module(make_engine(config), module)
    except MemoryError:
        return EXIT_MEMORY
    except SandboxError as exc:
        print(exc.message, file=sys.stderr)
        return EXIT_INVALID
    sys.stdout.buffer.write(serialized)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
