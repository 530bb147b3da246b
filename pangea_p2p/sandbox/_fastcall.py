"""Thin calls into wasmtime's C API for the per-task hot path (private to the sandbox).

wasmtime-py's ``Func.__call__`` rebuilds the function type and converts every value on each call (~25 µs;
notes §1c), and ``Instance.exports`` wraps every export. A task makes two calls (``alloc`` and ``run``) and
needs three exports, so this module calls ``wasmtime_func_call`` with prebuilt i32 arguments and fetches
exports by their index, which halves the cost of a trivial task (~105 µs -> ~50 µs measured).

It relies on wasmtime-py's ``_ffi`` bindings, which is safe because wasmtime is pinned exactly in
pyproject.toml; ``tests/sandbox/test_fastcall.py`` checks that it agrees with the public API. Errors and
traps are raised as the public ``wasmtime.WasmtimeError`` / ``wasmtime.Trap``.
"""

from __future__ import annotations

import ctypes
from ctypes import byref
from typing import Any

from wasmtime import Store, Trap, WasmtimeError
from wasmtime import _ffi as ffi

_I32 = int(ffi.WASMTIME_I32.value)
_I64 = int(ffi.WASMTIME_I64.value)
_Val = ffi.wasmtime_val_t
_Args1 = _Val * 1
_Args2 = _Val * 2
_TrapPtr = ctypes.POINTER(ffi.wasm_trap_t)


def context(store: Store) -> Any:
    """The raw store context pointer (valid while ``store`` lives)."""
    return store._context()


def instance_raw(instance: Any) -> Any:
    """The raw ``wasmtime_instance_t`` of a wasmtime-py ``Instance``."""
    return instance._instance


def export_at(ctx: Any, instance: Any, index: int) -> Any:
    """The ``wasmtime_extern_t`` of the export at ``index`` (the module's export order)."""
    item = ffi.wasmtime_extern_t()
    name_ptr = ctypes.POINTER(ctypes.c_char)()
    name_len = ctypes.c_size_t(0)
    if not ffi.wasmtime_instance_export_nth(ctx, byref(instance), index, byref(name_ptr), byref(name_len),
                                             byref(item)):
        raise WasmtimeError(f"instance has no export at index {index}")
    return item


def _call(ctx: Any, func: Any, params: Any, nparams: int) -> int:
    results: Any = _Args1()
    trap = _TrapPtr()
    error = ffi.wasmtime_func_call(ctx, byref(func), params, nparams, results, 1, byref(trap))
    if error:
        raise WasmtimeError._from_ptr(error)
    if trap:
        raise Trap._from_ptr(trap)
    kind = results[0].kind
    if kind == _I64:
        return int(results[0].of.i64)
    if kind == _I32:
        return int(results[0].of.i32)
    raise WasmtimeError(f"unexpected result kind {kind}")


def call_i32(ctx: Any, func: Any, a: int) -> int:
    """``func(a)`` for a function of type (i32) -> i32 or i64; the result as a signed int."""
    params: Any = _Args1()
    params[0].kind = _I32
    params[0].of.i32 = a
    return _call(ctx, func, params, 1)


def call_i32_i32(ctx: Any, func: Any, a: int, b: int) -> int:
    """``func(a, b)`` for a function of type (i32, i32) -> i32 or i64; the result as a signed int."""
    params: Any = _Args2()
    params[0].kind = _I32
    params[0].of.i32 = a
    params[1].kind = _I32
    params[1].of.i32 = b
    return _call(ctx, func, params, 2)


def memory_base(ctx: Any, memory: Any) -> int:
    """The host address of linear memory byte 0 (changes when the memory grows)."""
    return ctypes.cast(ffi.wasmtime_memory_data(ctx, byref(memory)), ctypes.c_void_p).value or 0


def memory_size(ctx: Any, memory: Any) -> int:
    """The linear memory's size in bytes."""
    return int(ffi.wasmtime_memory_data_size(ctx, byref(memory)))


def write(base: int, offset: int, data: bytes | bytearray | memoryview) -> None:
    """Copy ``data`` to linear memory at ``offset`` (the caller checked the bounds)."""
    n = len(data)
    if n == 0:
        return
    if isinstance(data, bytes):
        ctypes.memmove(base + offset, data, n)
    else:
        src = (ctypes.c_char * n).from_buffer(data) if not data_readonly(data) else bytes(data)
        ctypes.memmove(base + offset, src, n)


def data_readonly(data: bytearray | memoryview) -> bool:
    return isinstance(data, memoryview) and data.readonly


def read(base: int, offset: int, length: int) -> bytes:
    """Copy ``length`` bytes of linear memory at ``offset`` (the caller checked the bounds)."""
    return ctypes.string_at(base + offset, length) if length else b""
