"""scripts/with_postgres.sh: uses a running server, or starts (and stops) a private cluster."""

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "with_postgres.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def run(env_extra: dict, *cmd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")} | env_extra
    return subprocess.run([str(SCRIPT), *cmd], env=env, capture_output=True, text=True, timeout=180)


def test_uses_the_server_that_answers():
    port = int(os.environ.get("PGPORT", "5432"))
    result = run({}, "psql", "-Atc", "select 1", "postgres")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1" and "private" not in result.stdout
    assert port_open(port)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("psql") is None, reason="psql client not installed")
def test_starts_and_stops_a_private_cluster(tmp_path):
    port = free_port()
    env = {"PGPORT": str(port), "LOCAL_DIR": str(tmp_path / "local"), "PG_PRIVATE_EPHEMERAL": "1"}
    result = run(env, "psql", "-Atc", "select current_setting('port')", "postgres")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-2] == str(port)  # the line before the 'stopping' message
    assert "starting private PostgreSQL" in result.stdout and "stopping private PostgreSQL" in result.stdout
    assert not port_open(port)
    # a failing command's exit code comes through, and the cluster is still stopped
    result = run(env, "false")
    assert result.returncode == 1 and not port_open(port)
