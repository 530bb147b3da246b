"""`pangea guest new|build|run`: each language's template builds to a guest that runs, byte-identical on a
rebuild; Rust when a rustc with the wasm32 target exists (else skipped, saying why); errors are one line."""

from __future__ import annotations

import pytest

from pangea_p2p.cli.main import main
from pangea_p2p.errors import ConfigError, PangeaError
from pangea_p2p.guests import toolchain

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("lang", ["c", "zig", "rust", "python"])
def test_a_template_builds_and_runs(tmp_path, monkeypatch, capsys, lang):
    if lang == "rust" and toolchain.rust_compiler() is None:
        pytest.skip("no rustc with the wasm32-unknown-unknown target here (rustup target add, or Debian's "
                    "libstd-rust-dev-wasm32)")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert main(["guest", "new", "shout", "--lang", lang]) == 0
    assert main(["guest", "build", "shout"]) == 0
    built = tmp_path / "shout" / ("shout.py" if lang == "python" else "shout.wasm")
    first = built.read_bytes()
    (tmp_path / "in.txt").write_bytes(b"make me loud")
    capsys.readouterr()
    assert main(["guest", "run", str(built), "--input", "in.txt", "-o", "out.txt"]) == 0
    assert (tmp_path / "out.txt").read_bytes() == b"MAKE ME LOUD"
    assert "ok: 12 bytes of output; fuel" in capsys.readouterr().err
    if lang != "python":
        built.unlink()
        assert main(["guest", "build", "shout"]) == 0
        assert built.read_bytes() == first, "a rebuild gives the same bytes"


def test_a_compile_error_is_one_line_with_the_compilers_words_before_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    toolchain.new_guest(tmp_path / "broken", "c")
    (tmp_path / "broken" / "broken.c").write_text('#include "pangea_guest.h"\nuint64_t pg_main(void) { nope; }\n')
    assert main(["guest", "build", str(tmp_path / "broken")]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("pangea: error: compiling broken.c failed: ")
    assert "nope" in err


def test_bad_names_and_directories_are_config_errors(tmp_path):
    with pytest.raises(ConfigError):
        toolchain.new_guest(tmp_path / "9lives", "c")
    with pytest.raises(ConfigError):
        toolchain.new_guest(tmp_path / "ok", "cobol")
    with pytest.raises(ConfigError):
        toolchain.build_guest(tmp_path)
    toolchain.new_guest(tmp_path / "twice", "c")
    with pytest.raises(PangeaError):
        toolchain.new_guest(tmp_path / "twice", "c")
