"""A throwaway PostgreSQL server for the tests: its own data folder, loopback only, trust auth.

The server binaries are looked up as /usr/lib/postgresql/*/bin (Debian's layout), newest version
first. PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
`postgres` OS user, in a temporary folder that user owns. Each test gets a database of its own
(`fresh_database`), dropped afterwards, so tests stay independent on one server per worker.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

BIN_GLOB = "/usr/lib/postgresql/*/bin"
INSTALL = "apt-get install -y postgresql"
OS_USER = "postgres"


class ServerUnavailable(Exception):
    """No PostgreSQL server binaries here (a skip, unless REQUIRE_POSTGRES=1 makes it a failure)."""


def server_bin() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb, pg_ctl and postgres."""
    found = [
        folder
        for folder in Path("/").glob(BIN_GLOB.lstrip("/"))
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres"))
    ]
    if not found:
        raise ServerUnavailable(
            f"PostgreSQL server binaries not found in {BIN_GLOB} (install them: {INSTALL})"
        )
    return max(found, key=lambda folder: _version(folder.parent.name))


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """One running server: its folder, port and the URL of its `postgres` database."""

    bin: Path
    folder: Path
    port: int

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server (`immediate`: as in a crash, no checkpoint)."""
        _run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def start(self) -> None:
        """Start it again, on the same port, with the same data."""
        _run(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.folder / f"server-{self.port}.log"),
                "-w",
                "-o",
                self.options,
                "start",
            ]
        )

    @property
    def options(self) -> str:
        return (
            f"-c listen_addresses=127.0.0.1 -p {self.port} "
            f"-c unix_socket_directories={self.folder / 'sockets'} -c fsync=on"
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{OS_USER}@127.0.0.1:{self.port}/{database}"

    @contextmanager
    def fresh_database(self, options: str = "") -> Iterator[str]:
        """A new empty database's URL, dropped (with any connection left open) afterwards.

        `options` are CREATE DATABASE's (a locale, say)."""
        name = f"t_{uuid.uuid4().hex}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}" {options}')
        try:
            yield self.url(name)
        finally:
            with psycopg.connect(self.url(), autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _as_server_user(command: list[str]) -> list[str]:
    """The command, run as the `postgres` OS user when we are root (the server refuses root)."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", OS_USER, "--", *command]


def _run(command: list[str]) -> None:
    done = subprocess.run(
        _as_server_user(command), capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
        )


def _own_folder() -> Path:
    """A temporary folder (mode 0700) owned by the user the server runs as."""
    folder = Path(tempfile.mkdtemp(prefix="pg-test-"))
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam(OS_USER)
        except KeyError:
            shutil.rmtree(folder)
            raise ServerUnavailable(
                f"running as root and there is no {OS_USER!r} OS user to run the server as "
                f"(install it: {INSTALL})"
            ) from None
        os.chown(folder, user.pw_uid, user.pw_gid)
    folder.chmod(0o700)
    return folder


def _start(bin: Path, folder: Path) -> PostgresServer:
    """initdb with trust auth, then start on a free loopback port (a few tries: ports race)."""
    data, sockets = folder / "data", folder / "sockets"
    _run([str(bin / "initdb"), "-D", str(data), "-U", OS_USER, "-A", "trust", "-E", "UTF8"])
    _run(["mkdir", "-m", "0700", str(sockets)])
    error: Exception | None = None
    for _ in range(3):
        server = PostgresServer(bin, folder, _free_port())
        try:
            server.start()
            return server
        except RuntimeError as failed:
            error = failed
    raise RuntimeError(f"PostgreSQL did not start: {error}")


@contextmanager
def running_server() -> Iterator[PostgresServer]:
    """A server for the time of the block: stopped (immediate) and its folder removed after."""
    bin = server_bin()
    folder = _own_folder()
    try:
        server = _start(bin, folder)
        try:
            yield server
        finally:
            if (server.data / "postmaster.pid").exists():
                server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
