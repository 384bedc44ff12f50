"""Where the drop folder is: a local (or mounted) directory, or a directory on an SFTP server. Both offer the same
few operations, and writes are atomic on both: a reader sees a whole file or none (`.tmp` name, fsync, rename).

Layout under the root: `to_erp/` (the bridge writes, the ERP reads and archives to `to_erp/archive/`),
`from_erp/` (the ERP writes, the bridge reads and archives to `from_erp/archive/`, or sets aside in
`from_erp/rejected/` what it cannot trust). Files whose names start
with a dot or end in `.tmp` are work in progress and never listed.

An Airflow connection says which (folder_from_connection): conn type `fs` (or `file`) with extra
{"path": "/srv/erp-exchange"}; conn type `sftp` with host, port, login, password (or extra private_key) and extra
{"path": "/exchange", "host_key": "ssh-ed25519 AAAA..."}. The server's host key is checked: an SFTP connection
without `host_key` is refused unless it says `"no_host_key_check": true` in so many words.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import posixpath
import stat
import time
import uuid
from pathlib import Path
from typing import Protocol

from include.adapters.csv_folder.fileformat import encoding_of

log = logging.getLogger(__name__)
TO_ERP, FROM_ERP, ARCHIVE, REJECTED = "to_erp", "from_erp", "archive", "rejected"
SUBFOLDERS = (TO_ERP, FROM_ERP, f"{TO_ERP}/{ARCHIVE}", f"{FROM_ERP}/{ARCHIVE}", f"{FROM_ERP}/{REJECTED}")
# extra keys a drop-folder connection may carry; any other is a typo that would silently change behaviour
CONNECTION_EXTRA = {"path", "encoding", "timezone", "stale_minutes", "batch_rows", "host_key", "private_key",
                    "no_host_key_check", "timeout", "max_retries"}


class Folder(Protocol):
    def list(self, sub: str) -> list[str]: ...
    def read(self, path: str) -> bytes | None: ...
    def write_atomic(self, path: str, data: bytes) -> None: ...
    def move(self, src: str, dst: str) -> None: ...
    def close(self) -> None: ...


def _visible(name: str) -> bool:
    return not name.startswith(".") and not name.endswith(".tmp")


class LocalFolder:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        for sub in SUBFOLDERS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"folder {self.root}"

    def list(self, sub: str) -> list[str]:
        return sorted(p.name for p in (self.root / sub).iterdir() if p.is_file() and _visible(p.name))

    def read(self, path: str) -> bytes | None:
        try:
            return (self.root / path).read_bytes()
        except FileNotFoundError:
            return None

    def write_atomic(self, path: str, data: bytes) -> None:
        target = self.root / path
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)

    def move(self, src: str, dst: str) -> None:
        (self.root / dst).parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.root / src, self.root / dst)

    def close(self) -> None:
        pass


class SftpFolder:
    """The same operations over SFTP (paramiko). A dropped connection is reopened and the operation retried,
    `max_retries` times with a growing pause: every operation is safe to repeat (writes go to a fresh .tmp name)."""

    def __init__(self, host: str, port: int, username: str, root: str, password: str | None = None,
                 private_key: str | None = None, host_key: str | None = None, check_host_key: bool = True,
                 timeout: float = 30, max_retries: int = 3):
        self.host, self.port, self.username, self.root = host, port, username, root.rstrip("/") or "/"
        self._password, self._private_key = password, private_key
        self.host_key, self.check_host_key = host_key, check_host_key
        self.timeout, self.max_retries = timeout, max_retries
        self._ssh = self._sftp = None
        for sub in SUBFOLDERS:
            self._retry(self._mkdir, sub)

    def __repr__(self) -> str:
        return f"sftp://{self.username}@{self.host}:{self.port}{self.root}"

    def _connect(self):
        import paramiko

        if self._sftp is not None:
            return self._sftp
        ssh = paramiko.SSHClient()
        if self.check_host_key:
            if not self.host_key:
                raise ValueError(f"{self!r}: no host_key in the connection's extra: the server cannot be verified "
                                 "(set it, or no_host_key_check: true to accept any server)")
            key_type, key_b64 = self.host_key.split()[:2]
            key = paramiko.PKey.from_type_string(key_type, base64.b64decode(key_b64))
            name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
            ssh.get_host_keys().add(name, key_type, key)
            ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:
            ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        pkey = paramiko.PKey.from_private_key(io.StringIO(self._private_key)) if self._private_key else None
        ssh.connect(self.host, self.port, username=self.username, password=self._password, pkey=pkey,
                    timeout=self.timeout, banner_timeout=self.timeout, auth_timeout=self.timeout,
                    allow_agent=False, look_for_keys=False)
        self._ssh, self._sftp = ssh, ssh.open_sftp()
        self._sftp.get_channel().settimeout(self.timeout)
        return self._sftp

    def _retry(self, op, *args):
        import paramiko

        for attempt in range(self.max_retries + 1):
            try:
                return op(self._connect(), *args)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                final = (FileNotFoundError, PermissionError, paramiko.BadHostKeyException,
                         paramiko.AuthenticationException)  # a retry cannot change these
                if isinstance(exc, final) or attempt == self.max_retries:
                    raise
                log.warning("%r: %s; reconnecting (attempt %d of %d)", self, exc, attempt + 1, self.max_retries)
                self.close()
                time.sleep(min(0.5 * 2 ** attempt, 10))

    def _path(self, path: str) -> str:
        return posixpath.join(self.root, path)

    def _mkdir(self, sftp, sub: str) -> None:
        path = ""
        for part in self._path(sub).split("/"):
            path = f"{path}/{part}" if path or part else "/"
            path = path.replace("//", "/")
            try:
                sftp.stat(path)
            except FileNotFoundError:
                sftp.mkdir(path)

    def list(self, sub: str) -> list[str]:
        return self._retry(lambda sftp: sorted(a.filename for a in sftp.listdir_attr(self._path(sub))
                                               if stat.S_ISREG(a.st_mode or 0) and _visible(a.filename)))

    def read(self, path: str) -> bytes | None:
        def op(sftp):
            try:
                with sftp.open(self._path(path), "rb") as f:
                    f.prefetch()
                    return f.read()
            except FileNotFoundError:
                return None
        return self._retry(op)

    def write_atomic(self, path: str, data: bytes) -> None:
        def op(sftp):
            target = self._path(path)
            tmp = posixpath.join(posixpath.dirname(target), f".{posixpath.basename(target)}."
                                                            f"{uuid.uuid4().hex[:8]}.tmp")
            with sftp.open(tmp, "wb") as f:
                f.set_pipelined(True)
                f.write(data)
                f.flush()
                self._fsync(f)
            sftp.posix_rename(tmp, target)  # atomic replace (OpenSSH's posix-rename extension)
        self._retry(op)

    @staticmethod
    def _fsync(f) -> None:
        """fsync@openssh.com where the server offers it (OpenSSH does); else the server's close is all there is."""
        import paramiko

        try:
            f.sftp._request(paramiko.sftp.CMD_EXTENDED, "fsync@openssh.com", f.handle)
        except (OSError, EOFError, paramiko.SSHException):
            log.debug("the SFTP server has no fsync@openssh.com")

    def move(self, src: str, dst: str) -> None:
        def op(sftp):
            self._mkdir(sftp, posixpath.dirname(dst))
            sftp.posix_rename(self._path(src), self._path(dst))
        self._retry(op)

    def close(self) -> None:
        if self._ssh is not None:
            self._ssh.close()
        self._ssh = self._sftp = None


def folder_from_connection(conn) -> tuple[Folder, dict]:
    """The folder an Airflow connection names, and its settings (encoding, timezone, stale_minutes, batch_rows)."""
    where = f"connection {conn.conn_id!r}"
    extra = conn.extra_dejson or {}
    if unknown := sorted(set(extra) - CONNECTION_EXTRA):
        raise ValueError(f"{where}: unknown extra key(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(CONNECTION_EXTRA))})")
    if not extra.get("path"):
        raise ValueError(f"{where}: extra 'path' (the drop folder's root) is required")
    # encoding: what the bridge writes (the ERP's files say theirs in their manifest); timezone: of the ERP's
    # timestamps without an offset; stale_minutes: how long an incomplete batch may wait before it is reported
    settings = {"encoding": encoding_of(extra.get("encoding", "utf-8-sig"), where),
                "timezone": str(extra.get("timezone", "Asia/Shanghai")),
                "stale_minutes": int(extra.get("stale_minutes", 30)), "batch_rows": int(extra.get("batch_rows", 10000))}
    if conn.conn_type in ("fs", "file", "local"):
        return LocalFolder(extra["path"]), settings
    if conn.conn_type == "sftp":
        if not conn.host or not conn.login:
            raise ValueError(f"{where}: an SFTP drop folder needs host and login")
        check = extra.get("no_host_key_check", False)
        if not isinstance(check, bool):
            raise ValueError(f"{where}: no_host_key_check must be true or false, got {check!r}")
        return SftpFolder(conn.host, int(conn.port or 22), conn.login, extra["path"], password=conn.password,
                          private_key=extra.get("private_key"), host_key=extra.get("host_key"),
                          check_host_key=not check, timeout=float(extra.get("timeout", 30)),
                          max_retries=int(extra.get("max_retries", 3))), settings
    raise ValueError(f"{where}: conn type {conn.conn_type!r} is not a drop folder (fs or sftp)")
