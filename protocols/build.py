"""Regenerate the protobuf modules in pangea_p2p/wire from protocols/*.proto (what `make protos` runs).

The generated ``*_pb2.py`` and their ``.pyi`` stubs (mypy-protobuf) are committed, so installing the package
never needs protoc; ``tests/test_protocols.py`` checks that they equal a fresh build.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTOS = ROOT / "protocols"
OUT = ROOT / "pangea_p2p" / "wire"


def build(out_dir: Path) -> list[Path]:
    """Generate every protocols/*.proto into ``out_dir``; return the generated files."""
    plugin = Path(sys.executable).parent / "protoc-gen-mypy"
    protos = sorted(p.name for p in PROTOS.glob("*.proto"))
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTOS}", f"--python_out={out_dir}",
        f"--plugin=protoc-gen-mypy={plugin}", f"--mypy_out={out_dir}", *protos,
    ]
    subprocess.run(cmd, check=True, cwd=PROTOS)
    return sorted(p for p in out_dir.iterdir() if p.name.endswith(("_pb2.py", "_pb2.pyi")))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for path in build(Path(tmp)):
            shutil.copyfile(path, OUT / path.name)
            print(f"wrote {(OUT / path.name).relative_to(ROOT)}")


if __name__ == "__main__":
    main()
