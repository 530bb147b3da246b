"""The byte format between the pool (trio side) and a worker process, over the worker's stdin/stdout pipes.

No pickling: fixed little-endian headers followed by raw bytes, so a large input is copied once into the
pipe and once out of it.

    worker -> pool, once at start:  READY (8 bytes)
    pool -> worker, per task:       REQUEST header, cid, module bytes (only when flag MODULE is set), input
    worker -> pool, per task:       RESPONSE header, trap kind, payload (output, or a UTF-8 message)

A worker answers ``STATUS_NEED_MODULE`` when asked to run a CID it has not compiled (evicted from its cache)
and no bytes were sent; the pool then sends the request again with the module. Closing the worker's stdin
asks it to exit.
"""

from __future__ import annotations

import struct

from pangea_p2p.errors import FailureKind
from pangea_p2p.sandbox.config import SandboxLimits
from pangea_p2p.sandbox.result import SandboxResult

READY = b"PGWRKR01"

# op, flags, cid_len, module_len, input_len, fuel_max, memory_bytes_max, wall_time_s, output_bytes_max
REQUEST = struct.Struct("<BBHIIQQdQ")
OP_RUN = 1
FLAG_MODULE = 1

# status, flags, trap_kind_len, payload_len, fuel_used, peak_memory_bytes, wall_time_s, cpu_time_s
RESPONSE = struct.Struct("<BBHIQQdd")
STATUS_OK = 0
STATUS_NEED_MODULE = 255
FLAG_CACHED = 1  # the worker now holds the module compiled (the pool need not send its bytes again)

CID_BYTES_MAX = 200


def encode_request_head(cid: str, module: bytes | None, input_len: int, limits: SandboxLimits) -> bytes:
    """The header and CID (and module) of a request; the input follows it on the pipe."""
    cid_raw = cid.encode("ascii")
    head = REQUEST.pack(OP_RUN, FLAG_MODULE if module is not None else 0, len(cid_raw),
                        len(module) if module is not None else 0, input_len, limits.fuel_max,
                        limits.memory_bytes_max, limits.wall_time_s, limits.output_bytes_max)
    return head + cid_raw + (module or b"")


def decode_request_head(head: bytes | bytearray) -> tuple[int, int, int, int, int, SandboxLimits]:
    """(op, flags, cid_len, module_len, input_len, limits) of a request header."""
    op, flags, cid_len, module_len, input_len, fuel, memory, wall, output = REQUEST.unpack(head)
    return op, flags, cid_len, module_len, input_len, SandboxLimits(fuel, memory, wall, output)


def encode_response(result: SandboxResult, *, cached: bool) -> bytes:
    """A response carrying ``result`` (output or failure and the metering report)."""
    report = result.report
    flags = FLAG_CACHED if cached else 0
    if result.failure is None:
        assert result.output is not None
        status, trap_kind, payload = STATUS_OK, b"", result.output
    else:
        status = int(result.failure.kind)
        trap_kind = result.failure.trap_kind.encode()[:255]
        payload = result.failure.message.encode()
    head = RESPONSE.pack(status, flags, len(trap_kind), len(payload), report.fuel_used, report.peak_memory_bytes,
                         report.wall_time_s, report.cpu_time_s)
    return head + trap_kind + payload


def encode_need_module() -> bytes:
    return RESPONSE.pack(STATUS_NEED_MODULE, 0, 0, 0, 0, 0, 0.0, 0.0)


def decode_response(head: bytes | bytearray, trap_kind: bytes, payload: bytes) -> SandboxResult:
    """The result of a response whose header, trap kind and payload have been read."""
    status, _flags, _tk_len, _len, fuel, peak, wall, cpu = RESPONSE.unpack(head)
    if status == STATUS_OK:
        return SandboxResult.success(payload, fuel, peak, wall, cpu)
    try:
        kind = FailureKind(status)
    except ValueError:
        kind = FailureKind.WORKER_CRASHED
    return SandboxResult.failed(kind, payload.decode(errors="replace"), trap_kind=trap_kind.decode(errors="replace"),
                                fuel_used=fuel, peak_memory_bytes=peak, wall_time_s=wall, cpu_time_s=cpu)
