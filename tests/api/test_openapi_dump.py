"""The OpenAPI document written for the dashboard's types: the served one, byte for byte stable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eventvault_ledger.api import openapi_dump
from eventvault_ledger.api.app import create_app
from eventvault_ledger.api.settings import Settings, Token


def _dump(*args: str, seed: str = "0") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    return subprocess.run(  # noqa: S603 - this interpreter, our own module, paths the test made
        [sys.executable, "-m", "eventvault_ledger.api.openapi_dump", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )


def test_the_dump_is_the_document_an_app_with_tokens_serves():
    """The file holds what /openapi.json answers when the server has tokens, keys sorted."""
    token = Token("some-other-secret-0123456789", "someone", frozenset({"read"}))
    served = create_app(Settings(tokens=(token,))).openapi()
    text = openapi_dump.render(openapi_dump.document())
    assert json.loads(text) == served
    assert text == json.dumps(served, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert served["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "401" in served["paths"]["/api/query/accounts"]["get"]["responses"]
    assert "openapi-document-placeholder" not in text


def test_the_dump_is_the_same_bytes_in_every_process(tmp_path: Path):
    """Two runs with different hash seeds write identical files (the drift check compares bytes)."""
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert _dump(str(first), seed="1").returncode == 0
    assert _dump(str(second), seed="2").returncode == 0
    assert first.read_bytes() == second.read_bytes()
    assert first.read_text(encoding="utf-8") == openapi_dump.render(openapi_dump.document())


def test_an_unchanged_document_leaves_the_file_alone(tmp_path: Path):
    """A file that already holds the document is not rewritten (its time stamp drives the build)."""
    target = tmp_path / "openapi.json"
    assert openapi_dump.main([str(target)]) == 0
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))
    assert openapi_dump.main([str(target)]) == 0
    assert target.stat().st_mtime_ns == 1_000_000_000
    target.write_text("{}\n", encoding="utf-8")
    assert openapi_dump.main([str(target)]) == 0
    assert target.read_text(encoding="utf-8") == openapi_dump.render(openapi_dump.document())


def test_a_dash_writes_to_standard_output(capsys: pytest.CaptureFixture[str]):
    """``-`` prints the document instead of writing a file."""
    assert openapi_dump.main(["-"]) == 0
    assert capsys.readouterr().out == openapi_dump.render(openapi_dump.document())


@pytest.mark.parametrize("args", [[], ["a.json", "b.json"], ["--help"]])
def test_a_wrong_command_line_gets_the_usage(args: list[str], capsys: pytest.CaptureFixture[str]):
    """Anything but one path is answered with the usage and status 2."""
    assert openapi_dump.main(args) == 2
    assert "usage: python -m eventvault_ledger.api.openapi_dump PATH" in capsys.readouterr().err
