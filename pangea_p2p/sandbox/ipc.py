"""The byte format between the pool (trio side) and a sandbox process, over the process's stdin/stdout pipes.

No pickling: fixed little-endian headers followed by raw bytes, so a large input is copied once into the
pipe and once out of it.

    process -> pool, once at start:  READY (8 bytes)
    pool -> process, per request:    REQUEST header, cid (ASCII, canonical), body
    process -> pool, per request:    RESPONSE header, trap kind, body, log

Two requests: ``OP_COMPILE`` (body = module bytes; the answer is OK with no outputs, or the refusal) and
``OP_RUN`` (body = ``count`` u32 chunk lengths, then the chunks; the answer is OK with ``count`` u32 output
lengths and the outputs, or a failure whose body is a UTF-8 message and ``failed_index`` the chunk that
failed, ``NO_INDEX`` if none). Either answer to a run carries the task's log (what a WASI guest or a Python
step printed), after the body. Compilation is its own request so that the pool can tell a module that
crashes or hangs the compiler (it quarantines the CID) from a guest that does so while running.

Every request carries a sequence number that its response echoes: a pool that reads an answer to another
request knows the pipe is out of step and kills the process instead of handing the answer to a caller.

A sandbox process answers ``STATUS_NEED_MODULE`` when asked to run a CID it has not compiled (evicted from its
cache); the pool then sends ``OP_COMPILE`` and the run again. Closing the process's stdin asks it to exit.
A malformed request makes the process exit with a one-line message on stderr (the pool's bug, not a guest's).
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from pangea_p2p.errors import FailureKind
from pangea_p2p.sandbox.config import SandboxLimits
from pangea_p2p.sandbox.result import ChunksResult, MeteringReport

READY = b"PGSBOX03"

# op, reserved, cid_len, seq, count, body_len, fuel_max, memory_bytes_max, wall_time_s, output_bytes_max
REQUEST = struct.Struct("<BBHIIQQQdQ")
OP_RUN = 1
OP_COMPILE = 2

# status, flags, trap_kind_len, seq, failed_index, count, log_len, body_len, fuel_used, peak_memory_bytes,
# wall, cpu
RESPONSE = struct.Struct("<BBHIIIIQQQdd")
STATUS_OK = 0
STATUS_NEED_MODULE = 255
FLAG_CACHED = 1  # the process now holds the module compiled (the pool need not send its bytes again)
NO_INDEX = 0xFFFF_FFFF

CID_BYTES_MAX = 200
MESSAGE_BYTES_MAX = 4096
LOG_BYTES_MAX = 16 * 1024 * 1024 + 1024  # SandboxConfig.log_bytes_max's ceiling and the truncation note
TRAP_KIND_BYTES_MAX = 255
_FAILURE_STATUSES = frozenset(int(kind) for kind in FailureKind)


class IpcError(ValueError):
    """Bytes on a sandbox process's pipe that do not follow this format (the two ends are out of step)."""


class RequestHead(NamedTuple):
    op: int
    seq: int
    cid_len: int
    chunk_count: int
    body_len: int
    limits: SandboxLimits | None  # OP_RUN only


class ResponseHead(NamedTuple):
    status: int
    cached: bool
    trap_kind_len: int
    seq: int
    failed_index: int | None
    output_count: int
    log_len: int
    body_len: int
    report: tuple[int, int, float, float]

    @property
    def rest_len(self) -> int:
        """The bytes that follow the header: trap kind, body, log."""
        return self.trap_kind_len + self.body_len + self.log_len


def _lengths(count: int, data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, ...]:
    return struct.unpack_from(f"<{count}I", data, offset) if count else ()


def encode_run_head(seq: int, cid: str, sizes: list[int], limits: SandboxLimits) -> bytes:
    """Header, CID and chunk lengths of a run request; the chunks follow it on the pipe."""
    cid_raw = cid.encode("ascii")
    head = REQUEST.pack(OP_RUN, 0, len(cid_raw), seq, len(sizes), 4 * len(sizes) + sum(sizes), limits.fuel_max,
                        limits.memory_bytes_max, limits.wall_time_s, limits.output_bytes_max)
    return head + cid_raw + struct.pack(f"<{len(sizes)}I", *sizes)


def encode_compile(seq: int, cid: str, module: bytes) -> bytes:
    cid_raw = cid.encode("ascii")
    return REQUEST.pack(OP_COMPILE, 0, len(cid_raw), seq, 0, len(module), 0, 0, 0.0, 0) + cid_raw + module


def decode_request_head(head: bytes | bytearray) -> RequestHead:
    """The fields of a request header; IpcError if they are impossible."""
    op, _reserved, cid_len, seq, count, body_len, fuel, memory, wall, output = REQUEST.unpack(head)
    if op not in (OP_RUN, OP_COMPILE) or cid_len > CID_BYTES_MAX or body_len < 4 * count:
        raise IpcError(f"malformed request header (op {op}, cid {cid_len} bytes, {count} chunks in "
                        f"{body_len} bytes)")
    limits = None
    if op == OP_RUN:
        parsed = SandboxLimits.parse(fuel_max=fuel, memory_bytes_max=memory, wall_time_s=wall,
                                     output_bytes_max=output)
        if not isinstance(parsed, SandboxLimits):
            raise IpcError(f"malformed request limits: {parsed.message}")
        limits = parsed
    return RequestHead(op, seq, cid_len, count, body_len, limits)


def split_chunks(body: bytearray, count: int) -> list[memoryview]:
    """The chunks of a run request's body, as views into it (no copy); IpcError if the lengths do not add up."""
    return _split(memoryview(body), count, "request chunk")


def _split(body: bytes | memoryview, count: int, what: str) -> list[Any]:
    """The ``count`` pieces of ``body`` (u32 lengths, then the pieces); IpcError if the lengths do not add up."""
    sizes = _lengths(count, body)
    pos = 4 * count
    if pos + sum(sizes) != len(body):
        raise IpcError(f"{what} lengths add up to {sum(sizes)}, the body holds {len(body) - pos}")
    pieces = []
    for size in sizes:
        pieces.append(body[pos:pos + size])
        pos += size
    return pieces


def encode_response(seq: int, result: ChunksResult, *, cached: bool) -> bytes:
    """A response carrying ``result`` (outputs or failure and the metering report)."""
    report = result.report
    flags = FLAG_CACHED if cached else 0
    index = NO_INDEX
    if result.failure is None:
        assert result.outputs is not None
        status, trap_kind, count = STATUS_OK, b"", len(result.outputs)
        parts = [struct.pack(f"<{count}I", *map(len, result.outputs)), *result.outputs]
    else:
        status, count = int(result.failure.kind), 0
        trap_kind = result.failure.trap_kind.encode()[:TRAP_KIND_BYTES_MAX]
        parts = [result.failure.message.encode()[:MESSAGE_BYTES_MAX]]
        if result.failed_index is not None:
            index = result.failed_index
    body = b"".join(parts)
    log = result.log[:LOG_BYTES_MAX]
    head = RESPONSE.pack(status, flags, len(trap_kind), seq, index, count, len(log), len(body), report.fuel_used,
                         report.peak_memory_bytes, report.wall_time_s, report.cpu_time_s)
    return head + trap_kind + body + log


def encode_need_module(seq: int) -> bytes:
    return RESPONSE.pack(STATUS_NEED_MODULE, 0, 0, seq, NO_INDEX, 0, 0, 0, 0, 0, 0.0, 0.0)


def decode_response_head(head: bytes | bytearray, seq: int, body_bytes_max: int) -> ResponseHead:
    """The fields of the response to request ``seq``; IpcError if it answers another request or is impossible."""
    status, flags, tk_len, got_seq, index, count, log_len, body_len, fuel, peak, wall, cpu = RESPONSE.unpack(head)
    if got_seq != seq:
        raise IpcError(f"response to request {got_seq} where {seq} was expected")
    if status not in (STATUS_OK, STATUS_NEED_MODULE) and status not in _FAILURE_STATUSES:
        raise IpcError(f"response with unknown status {status}")
    if tk_len > TRAP_KIND_BYTES_MAX:
        raise IpcError(f"response with a trap kind of {tk_len} bytes")
    if log_len > LOG_BYTES_MAX:
        raise IpcError(f"response with a log of {log_len} bytes")
    if body_len > body_bytes_max or (status == STATUS_OK and body_len < 4 * count):
        raise IpcError(f"response body of {body_len} bytes for {count} outputs (at most {body_bytes_max})")
    return ResponseHead(status, bool(flags & FLAG_CACHED), tk_len, got_seq, None if index == NO_INDEX else index,
                        count, log_len, body_len, (fuel, peak, wall, cpu))


def decode_response_body(head: ResponseHead, rest: bytes) -> ChunksResult:
    """The result of a response from its header and the ``head.rest_len`` bytes after it (trap kind, body,
    log); IpcError if inconsistent."""
    body_end = head.trap_kind_len + head.body_len
    trap_kind, body, log = rest[:head.trap_kind_len], rest[head.trap_kind_len:body_end], rest[body_end:]
    fuel, peak, wall, cpu = head.report
    if head.status == STATUS_OK:
        outputs = _split(body, head.output_count, "response output")
        return ChunksResult(outputs, None, None, MeteringReport(fuel, peak, wall, cpu, None), log)
    return ChunksResult.failed(FailureKind(head.status), body.decode(errors="replace"),
                               failed_index=head.failed_index, trap_kind=trap_kind.decode(errors="replace"),
                               fuel_used=fuel, peak_memory_bytes=peak, wall_time_s=wall, cpu_time_s=cpu, log=log)
