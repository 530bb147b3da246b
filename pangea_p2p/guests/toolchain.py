"""Writing and building your own guests: templates with the guest ABI already handled, reproducible builds.

    new_guest(Path("wordlen"), "c")      # wordlen/wordlen.c + pangea_guest.h  (also "zig", "rust", "python")
    build_guest(Path("wordlen"))         # -> wordlen/wordlen.wasm

What ``pangea guest new|build`` (``pangea_p2p/cli/guest.py``) runs. Every template is a complete guest of
ABI kind 1 (protocols/guest-abi.md: exports ``memory``, ``alloc``, ``run``; imports nothing) whose one
function to edit maps a chunk to an output; as written it upper-cases ASCII letters.

- C and Zig build with the pinned ``ziglang`` package (a dependency: no root, no system toolchain):
  ``C_FLAGS`` below for C (freestanding, no libc, bulk memory, no fused multiply-add), ``zig build-exe
  -target wasm32-freestanding -O ReleaseSmall`` for Zig. Same source, same bytes, on every machine.
- Rust builds ``src/lib.rs`` (``no_std``, no dependencies) with ``rustc --target wasm32-unknown-unknown``,
  with the first ``rustc`` found (PATH, then /usr/bin) that has that target's standard library (``rustup
  target add wasm32-unknown-unknown``, or Debian's ``libstd-rust-dev-wasm32``); without one the build
  stops with a message saying so. The template's Cargo.toml builds the same crate with cargo.
- Python needs no build: ``NAME/NAME.py`` is the step (``pangea guest run NAME/NAME.py --input X``).

Errors are ``PangeaError`` with one line; a compiler's own messages are in ``BuildFailed.output``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

from pangea_p2p.errors import ConfigError, PangeaError

LANGS = ("c", "zig", "rust", "python")
BUILD_TIMEOUT_S = 600.0
C_FLAGS = [
    "-target", "wasm32-freestanding",
    "-O2",
    "-nostdlib",
    "-mbulk-memory",            # memcpy/memset become memory.copy/memory.fill, not imports
    "-ffp-contract=off",        # never fuse a*b+c: results must be bit-identical everywhere
    "-fno-stack-protector",
    "-Wall", "-Werror",
    "-Wl,--no-entry",
    "-Wl,-z,stack-size=262144",  # 256 KiB shadow stack: 5 pages of initial memory in all
    "-s",
]
RUST_FLAGS = ["--edition", "2021", "--crate-type", "cdylib", "--target", "wasm32-unknown-unknown",
              "-C", "opt-level=3", "-C", "panic=abort", "-C", "strip=symbols"]

C_TEMPLATE = """\
/* {name}: a Pangea execute step in C (guest ABI kind 1: no libc, no imports).
 *   pangea guest build {name}                          ->  {name}/{name}.wasm
 *   pangea guest run {name}/{name}.wasm --input FILE   runs it here: output, fuel, memory, time
 * pangea_guest.h provides alloc/run, a bump allocator (pg_alloc) and PG_OUTPUT / PG_ERROR. */
#include "pangea_guest.h"

/* One chunk in, one output out. Here: the input with ASCII letters upper-cased. */
uint64_t pg_main(const uint8_t *in, uint32_t len) {{
    uint8_t *out = pg_alloc(len);
    if (len && !out) PG_ERROR(PG_ERR_OUT_OF_MEMORY);
    for (uint32_t i = 0; i < len; i++) {{
        uint8_t c = in[i];
        out[i] = (c >= 'a' && c <= 'z') ? (uint8_t)(c - 32) : c;
    }}
    PG_OUTPUT(out, len);
}}
"""

ZIG_TEMPLATE = """\
// {name}: a Pangea execute step in Zig (guest ABI kind 1: no imports).
//   pangea guest build {name}                          ->  {name}/{name}.wasm
//   pangea guest run {name}/{name}.wasm --input FILE   runs it here: output, fuel, memory, time

/// One chunk in, one output out. Here: the input with ASCII letters upper-cased.
fn step(in: []const u8) ?[]u8 {{
    const out = grab(@intCast(in.len)) orelse return null;
    for (in, 0..) |c, i| {{
        out[i] = if (c >= 'a' and c <= 'z') c - 32 else c;
    }}
    return out[0..in.len];
}}

// ---- the guest ABI (protocols/guest-abi.md): alloc, run, and a bump allocator -------------------------
extern var __heap_base: u8;
var heap_top: usize = 0;
const page_bytes: u64 = 65536;
const err_out_of_memory: u64 = 1;

fn grab(len: u32) ?[*]u8 {{
    if (heap_top == 0) heap_top = @intFromPtr(&__heap_base);
    const start = (heap_top + 15) & ~@as(usize, 15);
    const end = @as(u64, start) + len;
    if (end > 0xFFFF_FFFF) return null;
    const have = @as(u64, @wasmMemorySize(0)) * page_bytes;
    if (end > have) {{
        const pages = (end - have + page_bytes - 1) / page_bytes;
        if (@wasmMemoryGrow(0, @intCast(pages)) == -1) return null;
    }}
    heap_top = @intCast(end);
    return @ptrFromInt(start);
}}

export fn alloc(len: u32) u32 {{
    const p = grab(len) orelse return 0;
    return @intCast(@intFromPtr(p));
}}

export fn run(ptr: u32, len: u32) u64 {{
    const in: [*]const u8 = @ptrFromInt(ptr);
    const out = step(in[0..len]) orelse return (@as(u64, 0xFFFF_FFFF) << 32) | err_out_of_memory;
    return (@as(u64, out.len) << 32) | @as(u64, @intFromPtr(out.ptr));
}}
"""

RUST_TEMPLATE = """\
//! {name}: a Pangea execute step in Rust (guest ABI kind 1: no std, no imports).
//!   pangea guest build {name}                          ->  {name}/{name}.wasm
//!   pangea guest run {name}/{name}.wasm --input FILE   runs it here: output, fuel, memory, time
#![no_std]

use core::arch::wasm32;

/// One chunk in, one output out. Here: the input with ASCII letters upper-cased.
fn step(input: &[u8]) -> Option<&'static mut [u8]> {{
    let out = grab(input.len() as u32)?;
    for (o, &c) in out.iter_mut().zip(input) {{
        *o = c.to_ascii_uppercase();
    }}
    Some(out)
}}

// ---- the guest ABI (protocols/guest-abi.md): alloc, run, and a bump allocator -------------------------
const PAGE_BYTES: u64 = 65536;
const ERR_OUT_OF_MEMORY: u64 = 1;

extern "C" {{
    static __heap_base: u8;
}}
static mut HEAP_TOP: usize = 0;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {{
    wasm32::unreachable()
}}

fn grab(len: u32) -> Option<&'static mut [u8]> {{
    unsafe {{
        if HEAP_TOP == 0 {{
            HEAP_TOP = core::ptr::addr_of!(__heap_base) as usize;
        }}
        let start = (HEAP_TOP + 15) & !15;
        let end = start as u64 + len as u64;
        if end > 0xFFFF_FFFF {{
            return None;
        }}
        let have = wasm32::memory_size(0) as u64 * PAGE_BYTES;
        if end > have {{
            let pages = (end - have + PAGE_BYTES - 1) / PAGE_BYTES;
            if wasm32::memory_grow(0, pages as usize) == usize::MAX {{
                return None;
            }}
        }}
        HEAP_TOP = end as usize;
        Some(core::slice::from_raw_parts_mut(start as *mut u8, len as usize))
    }}
}}

#[no_mangle]
pub extern "C" fn alloc(len: u32) -> u32 {{
    grab(len).map_or(0, |p| p.as_ptr() as u32)
}}

#[no_mangle]
pub extern "C" fn run(ptr: u32, len: u32) -> u64 {{
    let input = unsafe {{ core::slice::from_raw_parts(ptr as *const u8, len as usize) }};
    match step(input) {{
        Some(out) => ((out.len() as u64) << 32) | out.as_ptr() as u64,
        None => (0xFFFF_FFFFu64 << 32) | ERR_OUT_OF_MEMORY,
    }}
}}
"""

CARGO_TEMPLATE = """\
# `pangea guest build {name}` compiles src/lib.rs with rustc directly; this file builds the same crate with
# `cargo build --release --target wasm32-unknown-unknown` (add dependencies here, no_std ones).
[package]
name = "{name}"
version = "0.1.0"
edition = "2021"

[lib]
crate-type = ["cdylib"]

[profile.release]
opt-level = 3
panic = "abort"
strip = "symbols"
"""

PYTHON_TEMPLATE = """\
# {name}: a Pangea execute step in Python. It runs in MicroPython inside the WebAssembly sandbox: no files,
# no network, the clock reads 0, no third-party packages; print() goes to the task's log.
#   pangea guest run {name}/{name}.py --input FILE
#   pangea job submit --guest {name}/{name}.py --input FILE --split lines:1000 --wait


def step(chunk: bytes) -> bytes:
    \"\"\"One chunk in, one output out. Here: the input upper-cased.\"\"\"
    return chunk.upper()
"""


class BuildFailed(PangeaError):
    """A compiler refused the guest; ``output`` is what it printed."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


def header_path() -> Path:
    """``pangea_guest.h``, the C side of the guest ABI (shipped with the package)."""
    return Path(str(resources.files("pangea_p2p.guests").joinpath("pangea_guest.h")))


def _check_name(name: str) -> None:
    if not name or not (name[0].isalpha() and all(c.isalnum() or c == "_" for c in name)) or not name.isascii():
        raise ConfigError("name", f"{name!r}: a guest name is a letter, then letters, digits or _")


def new_guest(directory: Path, lang: str) -> list[Path]:
    """Write a template guest in ``directory`` (created; its name is the guest's); the files written."""
    name = directory.name
    _check_name(name)
    if lang not in LANGS:
        raise ConfigError("--lang", f"{lang!r}: one of {', '.join(LANGS)}")
    if directory.exists() and any(directory.iterdir()):
        raise ConfigError("name", f"{directory} exists and is not empty")
    files: dict[Path, str] = {}
    if lang == "c":
        files[directory / f"{name}.c"] = C_TEMPLATE.format(name=name)
        files[directory / "pangea_guest.h"] = header_path().read_text()
    elif lang == "zig":
        files[directory / f"{name}.zig"] = ZIG_TEMPLATE.format(name=name)
    elif lang == "rust":
        files[directory / "src" / "lib.rs"] = RUST_TEMPLATE.format(name=name)
        files[directory / "Cargo.toml"] = CARGO_TEMPLATE.format(name=name)
    else:
        files[directory / f"{name}.py"] = PYTHON_TEMPLATE.format(name=name)
    try:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    except OSError as exc:
        raise PangeaError(f"cannot write the template in {directory}: {exc.strerror}") from None
    return list(files)


def guest_lang(directory: Path) -> str:
    """The language of the guest in ``directory``, from the files there; ConfigError if none is found."""
    name = directory.name
    for lang, source in (("c", f"{name}.c"), ("zig", f"{name}.zig"), ("rust", "src/lib.rs"), ("python", f"{name}.py")):
        if (directory / source).is_file():
            return lang
    raise ConfigError("guest", f"{directory} holds no {name}.c, {name}.zig, src/lib.rs or {name}.py "
                               "(make one with `pangea guest new`)")


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None, what: str) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                              check=False)
    except FileNotFoundError:
        raise PangeaError(f"cannot build: {cmd[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise PangeaError(f"{what} did not finish within {BUILD_TIMEOUT_S:g} s") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        first = next((ln for ln in lines if "error" in ln), lines[0] if lines else f"exit {proc.returncode}")
        raise BuildFailed(f"{what} failed: {first.strip()}", proc.stderr + proc.stdout)


def zig_env(cache_dir: Path | None) -> dict[str, str]:
    """The environment for ``python -m ziglang``: its caches under ``cache_dir`` (default: the user's cache)."""
    base = cache_dir or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pangea" / "zig"
    return dict(os.environ, ZIG_GLOBAL_CACHE_DIR=str(base / "global"), ZIG_LOCAL_CACHE_DIR=str(base / "local"))


def rust_compiler() -> str | None:
    """A ``rustc`` that has the wasm32-unknown-unknown standard library, or None."""
    candidates = [c for c in (shutil.which("rustc"), "/usr/bin/rustc") if c and os.access(c, os.X_OK)]
    for rustc in dict.fromkeys(candidates):
        try:
            libdir = subprocess.run([rustc, "--print", "target-libdir", "--target", "wasm32-unknown-unknown"],
                                    capture_output=True, text=True, timeout=60, check=False).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            continue
        if libdir and Path(libdir).is_dir() and any(Path(libdir).glob("libcore-*")) and _has_wasm_linker(rustc):
            return rustc
    return None


def _has_wasm_linker(rustc: str) -> bool:
    """Whether ``rustc`` finds ``rust-lld``, its wasm32 linker: on PATH (Debian's is a link to lld-14, from the
    package lld-14, which libstd-rust-dev-wasm32 only recommends) or in its sysroot (rustup's)."""
    if shutil.which("rust-lld"):
        return True
    try:
        sysroot = subprocess.run([rustc, "--print", "sysroot"], capture_output=True, text=True, timeout=60,
                                 check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return False
    return bool(sysroot) and any(Path(sysroot, "lib", "rustlib").glob("*/bin/rust-lld"))


def build_guest(directory: Path, cache_dir: Path | None = None) -> Path:
    """Build the guest in ``directory`` into ``directory/NAME.wasm`` (a Python step needs no build: its
    ``.py`` is returned after a syntax check). PangeaError (BuildFailed with the compiler's words)."""
    directory = directory.resolve()
    name = directory.name
    lang = guest_lang(directory)
    out = directory / f"{name}.wasm"
    if lang == "python":
        from pangea_p2p.sdk.steps import python_file_step

        python_file_step(directory / f"{name}.py")
        return directory / f"{name}.py"
    if lang == "c":
        cmd = [sys.executable, "-m", "ziglang", "cc", *C_FLAGS, f"-I{header_path().parent}", "-o", out.name,
               f"{name}.c"]
        _run(cmd, directory, zig_env(cache_dir), f"compiling {name}.c")
    elif lang == "zig":
        cmd = [sys.executable, "-m", "ziglang", "build-exe", f"{name}.zig", "-target", "wasm32-freestanding",
               "-fno-entry", "-rdynamic", "-O", "ReleaseSmall", "-fstrip", f"-femit-bin={out.name}"]
        _run(cmd, directory, zig_env(cache_dir), f"compiling {name}.zig")
    else:
        rustc = rust_compiler()
        if rustc is None:
            raise PangeaError("Rust guests need rustc with the wasm32-unknown-unknown target, and none was found: "
                              "run `rustup target add wasm32-unknown-unknown` (or install Debian's "
                              "libstd-rust-dev-wasm32), then build again")
        _run([rustc, *RUST_FLAGS, "-o", out.name, "src/lib.rs"], directory, None, "compiling src/lib.rs")
    return out
