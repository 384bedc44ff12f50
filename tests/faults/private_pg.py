"""A PostgreSQL server of a test's own (initdb into a temp folder, its own port), which the test may crash and
start again: the bridge DB "lost mid-run" without touching the machine's shared server."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

from include.sandbox.crm.process import free_port


def bindir() -> str:
    found = shutil.which("pg_ctl")
    for d in ([os.path.dirname(found)] if found else []) + sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(os.path.join(d, "pg_ctl"), os.X_OK) and os.access(os.path.join(d, "initdb"), os.X_OK):
            return d
    raise RuntimeError("no initdb / pg_ctl found (PATH or /usr/lib/postgresql/*/bin)")


class PrivatePostgres:
    def __init__(self, base: Path):
        self.bin, self.port, self.user = bindir(), free_port(), os.environ.get("PGUSER", "postgres")
        # initdb refuses root: run the server as the postgres system account, in a folder it owns
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        self.base = Path(base) if not self.as_owner else Path(f"/var/tmp/bridge-faults-{os.getpid()}-{self.port}")
        self.data, self.run_dir, self.log = self.base / "data", self.base / "run", self.base / "server.log"
        self.base.mkdir(parents=True, exist_ok=True)
        if self.as_owner:
            shutil.chown(self.base, "postgres")
            os.chmod(self.base, 0o700)
        self._owner(["mkdir", "-p", str(self.run_dir)])
        self._owner([f"{self.bin}/initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "--encoding=UTF8",
                     "--locale=C.UTF-8"])
        self.start()

    def _owner(self, cmd: list[str]) -> None:
        subprocess.run(self.as_owner + cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self) -> None:
        self._owner([f"{self.bin}/pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o",
                     f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.run_dir} "
                     "-c fsync=off", "start"])

    def crash(self) -> None:
        """As if the machine lost power: no shutdown checkpoint, every connection cut."""
        self._owner([f"{self.bin}/pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"])

    def url(self, dbname: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres"):
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname=dbname)

    def close(self) -> None:
        subprocess.run(self.as_owner + [f"{self.bin}/pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.base, ignore_errors=True)
