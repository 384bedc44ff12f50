"""A real SFTP server for the drop-folder tests: asyncssh's SSH server with its SFTP subsystem, chrooted to a
directory, password login, its own ed25519 host key (which the bridge's connection names), on a free port, in a
thread of the test process."""

from __future__ import annotations

import asyncio
import secrets
import threading

import asyncssh


class SftpServer:
    def __init__(self, root: str, username: str = "erp_exchange"):
        self.root, self.username, self.password = root, username, secrets.token_urlsafe(12)
        self._key = asyncssh.generate_private_key("ssh-ed25519")
        self.host_key = self._key.export_public_key("openssh").decode().split()[:2]
        self.host_key = " ".join(self.host_key)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(30), "the SFTP server did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self

        class Auth(asyncssh.SSHServer):
            def begin_auth(self, username: str) -> bool:
                return True

            def password_auth_supported(self) -> bool:
                return True

            def validate_password(self, username: str, password: str) -> bool:
                return username == server.username and secrets.compare_digest(password, server.password)

        async def start():
            self._server = await asyncssh.listen(
                "127.0.0.1", 0, server_host_keys=[self._key], server_factory=Auth,
                sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=self.root.encode()),
                allow_scp=False)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def connection(self, **extra) -> dict:
        """The Airflow connection (JSON form) of this server as the drop folder."""
        return {"conn_type": "sftp", "host": "127.0.0.1", "port": self.port, "login": self.username,
                "password": self.password, "extra": {"path": "/", "host_key": self.host_key} | extra}

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
