"""The committed generated protobuf modules equal a fresh build of protocols/*.proto."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None, reason="grpc-tools (the protoc) is not installed")
def test_generated_modules_are_up_to_date(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("protocols_build", ROOT / "protocols" / "build.py")
    assert spec is not None
    assert spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    fresh = build.build(tmp_path)
    assert fresh, "no .proto compiled"
    for path in fresh:
        committed = ROOT / "pangea_p2p" / "wire" / path.name
        assert committed.exists(), f"{committed} is missing: run `make protos`"
        assert committed.read_bytes() == path.read_bytes(), f"{committed} is stale: run `make protos`"


def test_every_proto_has_a_spec() -> None:
    for proto in (ROOT / "protocols").glob("*.proto"):
        assert proto.with_suffix(".md").exists(), f"{proto.name} has no {proto.stem}.md"
