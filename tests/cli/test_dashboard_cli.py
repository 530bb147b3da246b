"""`pangea dashboard`: the address of a running peer's dashboard with its API token in the fragment, opened in a
browser unless --no-open; a clear one-line error when no peer runs."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import pytest

from pangea_p2p.cli import main

TOKEN = "ab" * 32


def data_dir(tmp_path: Path, token: str | None = TOKEN) -> Path:
    (tmp_path / "api").write_text("127.0.0.1:5999\n")
    if token is not None:
        (tmp_path / "api_token").write_text(token + "\n")
    return tmp_path


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    urls: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url: urls.append(url) or True)
    monkeypatch.delenv("PANGEA_API_TOKEN", raising=False)
    return urls


def test_it_prints_and_opens_the_address_with_the_token(tmp_path: Path, opened: list[str],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main.main(["dashboard", "--data-dir", str(data_dir(tmp_path))]) == 0
    assert capsys.readouterr().out == f"http://127.0.0.1:5999/#token={TOKEN}\n"
    assert opened == [f"http://127.0.0.1:5999/#token={TOKEN}"]


def test_no_open_only_prints_and_a_peer_without_a_token_gets_the_bare_address(
        tmp_path: Path, opened: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main.main(["dashboard", "--data-dir", str(data_dir(tmp_path, None)), "--no-open"]) == 0
    assert capsys.readouterr().out == "http://127.0.0.1:5999/\n"
    assert opened == []


def test_with_api_the_token_comes_from_the_option_or_the_environment(
        tmp_path: Path, opened: list[str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    args = ["dashboard", "--api", "10.0.0.1:7000", "--data-dir", str(tmp_path / "none"), "--no-open"]
    assert main.main([*args, "--token", "t/1"]) == 0
    assert capsys.readouterr().out == "http://10.0.0.1:7000/#token=t%2F1\n"
    monkeypatch.setenv("PANGEA_API_TOKEN", "fromenv")
    assert main.main(args) == 0
    assert capsys.readouterr().out == "http://10.0.0.1:7000/#token=fromenv\n"


def test_without_a_browser_it_says_to_open_the_address(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(webbrowser, "open", lambda url: False)
    assert main.main(["dashboard", "--data-dir", str(data_dir(tmp_path))]) == 0
    assert "no web browser found here" in capsys.readouterr().out


def test_with_no_peer_running_it_says_so_in_one_line(tmp_path: Path, opened: list[str],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main.main(["dashboard", "--data-dir", str(tmp_path), "--no-open"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "no peer is running with data dir" in err
    assert opened == []
