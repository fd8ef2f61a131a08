"""The private PostgreSQL server the tests run on, and what the suite does without one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest

from eventvault.testing.postgres import ClusterUnavailable, PostgresCluster, find_bindir

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.postgres


def test_a_private_cluster_keeps_its_data_and_port_across_a_crash_and_is_removed_after(private_cluster):
    """Committed rows survive stop -m immediate; the URL stays valid; destroy removes the folder."""
    url = private_cluster.create_database("kept")
    assert private_cluster.create_database("kept") == url  # idempotent
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")
    private_cluster.crash()
    assert not private_cluster.is_running()
    private_cluster.start()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
    root = private_cluster.root
    assert root is not None
    assert root.is_dir()
    private_cluster.destroy()
    assert not root.exists()


def test_missing_binaries_are_a_clear_error():
    """A folder without the server binaries: ClusterUnavailable says what to install."""
    with pytest.raises(ClusterUnavailable, match="no PostgreSQL server binaries"):
        PostgresCluster(Path("/nonexistent"))


_NO_BINARIES = textwrap.dedent(
    """
    import eventvault.testing.postgres as pg

    def _none():
        return None

    pg.find_bindir = _none
    """
)


@pytest.mark.skipif(find_bindir() is None, reason="needs the binaries to be hidden, not missing")
@pytest.mark.parametrize("required", [False, True])
def test_without_binaries_postgres_tests_skip_loudly_or_fail_in_ci(tmp_path, required):
    """No server binaries: one loud skip reason locally; with EVENTVAULT_REQUIRE_POSTGRES=1 a failure."""
    (tmp_path / "no_binaries.py").write_text(_NO_BINARIES)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTVAULT_", "PYTEST_"))}
    env["PYTHONPATH"] = str(tmp_path)
    if required:
        env["EVENTVAULT_REQUIRE_POSTGRES"] = "1"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no_binaries",
            "-p",
            "no:cacheprovider",
            "-q",
            "tests/postgres/test_schema.py",
            "-k",
            "bad_options_in_a_url",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = done.stdout + done.stderr
    assert "no PostgreSQL server binaries" in out, out
    assert "apt-get install postgresql" in out, out
    if required:
        assert done.returncode == 1, out
        assert "EVENTVAULT_REQUIRE_POSTGRES=1" in out, out
    else:
        assert done.returncode == 0, out
        assert "1 skipped" in out, out
