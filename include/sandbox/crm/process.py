"""Run the CRM sandbox server as a child process and drive its /__sandbox/ control API."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CrmSandboxProcess:
    """`python -m include.sandbox.crm serve` on 127.0.0.1:port with its own data folder."""

    def __init__(self, data_dir: str | Path, port: int | None = None, env: dict | None = None):
        self.data_dir, self.port = Path(data_dir), port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.data_dir.parent / f"crm-sandbox-{self.port}.log"
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "include.sandbox.crm", "serve", "--port", str(self.port), "--data-dir",
             str(self.data_dir)], env=os.environ | (env or {}), stdout=self._log, stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[3])
        self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"CRM sandbox exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if requests.get(f"{self.url}/__sandbox/health", timeout=1).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"CRM sandbox did not answer within {timeout} s; see {self.log_path}")

    def admin(self, method: str, path: str, timeout: float = 120, **kw) -> dict:
        resp = requests.request(method, f"{self.url}/__sandbox/{path}", timeout=timeout, **kw)
        resp.raise_for_status()
        return resp.json()

    def reset(self, timeout: float = 600, **body) -> dict:
        """Wipe and reseed (1,000,000 products take a few minutes)."""
        return self.admin("POST", "reset", timeout=timeout, json=body)

    def configure(self, **settings) -> dict:
        return self.admin("PUT", "config", json=settings)

    def credits_used(self) -> int:
        """API credits spent in the rolling 24 hours, charged per call type as Zoho's API-limits page lists them
        (what the benchmarks print as the cost of a run against a real org)."""
        return int(self.admin("GET", "stats")["credits_used_24h"])

    def plant(self, module: str, record_id: str, fields: dict | None = None, rows: dict | None = None) -> dict:
        """Raw values into a record, past the API's field checks (hostile-input tests; /__sandbox/plant)."""
        return self.admin("POST", "plant", json={"module": module, "id": record_id, "fields": fields or {},
                                                 "rows": rows or {}})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()

    def __enter__(self) -> CrmSandboxProcess:
        return self

    def __exit__(self, *_) -> None:
        self.stop()
