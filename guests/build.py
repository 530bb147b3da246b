"""Build the WebAssembly guests: ``make guests`` (= ``.venv/bin/python guests/build.py``).

Each ``guests/<name>.c`` is compiled freestanding (no libc, no WASI) to ``pangea_p2p/guests/<name>.wasm``
with the pinned ``ziglang`` package's clang (``python -m ziglang cc``), so no root and no system toolchain
are needed and a rebuild is byte-identical. ``invalid.wasm`` is not compiled: it is a fixed run of bytes
that is not a WebAssembly module. The zig caches stay inside the repository (``.zig-cache/``).

    python guests/build.py            build every guest into pangea_p2p/guests/
    python guests/build.py --check    build into a temporary directory and compare with the committed files
    python guests/build.py --out DIR  build into DIR
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pangea_p2p.guests.toolchain import C_FLAGS, header_path  # noqa: E402  (the flags every C guest builds with)

SRC = ROOT / "guests"
OUT = ROOT / "pangea_p2p" / "guests"

EXTRA_FLAGS: dict[str, list[str]] = {
    "matmul_block": ["-msimd128"],  # vectorises the j loop; per-element summation order is unchanged
}
# Not a WebAssembly module: the magic number, a wrong version, then bytes that are no section.
INVALID_WASM = b"\x00asm\x02\x00\x00\x00\xff\xfe\xfd\xfc not a module"


def guest_sources() -> list[Path]:
    return sorted(p for p in SRC.glob("*.c"))


def build_one(source: Path, out_dir: Path, env: dict[str, str]) -> Path:
    target = out_dir / f"{source.stem}.wasm"
    cmd = [sys.executable, "-m", "ziglang", "cc", *C_FLAGS, *EXTRA_FLAGS.get(source.stem, []),
           f"-I{header_path().parent}", "-o", str(target), source.name]
    proc = subprocess.run(cmd, cwd=SRC, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"building {source.name} failed:\n{proc.stderr}")
    return target


def build_all(out_dir: Path) -> list[Path]:
    cache = ROOT / ".zig-cache"
    env = dict(os.environ, ZIG_GLOBAL_CACHE_DIR=str(cache / "global"), ZIG_LOCAL_CACHE_DIR=str(cache / "local"))
    out_dir.mkdir(parents=True, exist_ok=True)
    built = [build_one(src, out_dir, env) for src in guest_sources()]
    invalid = out_dir / "invalid.wasm"
    invalid.write_bytes(INVALID_WASM)
    return [*built, invalid]


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = build_all(Path(tmp))
        stale = [p.name for p in fresh if not (OUT / p.name).exists() or (OUT / p.name).read_bytes() != p.read_bytes()]
    if stale:
        print("committed guests differ from a fresh build: " + ", ".join(stale))
        return 1
    print(f"{len(fresh)} committed guests equal a fresh build")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare a fresh build with the committed files")
    parser.add_argument("--out", type=Path, default=OUT, help="output directory")
    args = parser.parse_args()
    if args.check:
        return check()
    for path in build_all(args.out):
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}  {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
