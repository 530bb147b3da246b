"""The committed guests: listed, loadable, import-free, and equal to a fresh build."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from wasmtime import Engine, Module

from pangea_p2p.errors import ConfigError
from pangea_p2p.guests import GUEST_NAMES, load_guest

ROOT = Path(__file__).resolve().parents[2]


def test_guest_names_match_the_committed_files():
    files = {p.stem for p in (ROOT / "pangea_p2p" / "guests").glob("*.wasm")}
    assert files == set(GUEST_NAMES)


def test_unknown_guest_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown guest"):
        load_guest("nope")


@pytest.mark.parametrize("name", [n for n in GUEST_NAMES if n not in ("invalid", "forbidden_import")])
def test_guests_import_nothing(name):
    module = Module(Engine(), load_guest(name))
    assert list(module.imports) == []
    assert {"memory", "alloc", "run"} <= {e.name for e in module.exports}


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ziglang") is None, reason="ziglang toolchain not installed")
def test_committed_guests_equal_a_fresh_build():
    proc = subprocess.run([sys.executable, str(ROOT / "guests" / "build.py"), "--check"], capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "equal a fresh build" in proc.stdout
