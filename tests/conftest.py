"""Fixtures: a real local stand-in for Codat and a real `serve` process, on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from processor.codat.client import basic_auth
from processor.sandbox import SandboxServer
from processor.sandbox.sender import generate_secret
from tests.support import API_KEY, Serve, ServeProcess, ServeThread, free_port


class Codat:
    """The stand-in for Codat, driven over its HTTP API like a test would drive the real one."""

    def __init__(self, server: SandboxServer) -> None:
        self.server = server
        self.url = server.url
        self.http = httpx.Client(
            base_url=server.url, headers={"Authorization": basic_auth(API_KEY)}, timeout=10
        )

    def create_company(self, name: str = "Sawayn Group") -> dict[str, Any]:
        return self._ok(self.http.post("/companies", json={"name": name}))

    def create_connection(self, company_id: str, platform_key: str = "gbol") -> dict[str, Any]:
        return self._ok(
            self.http.post(
                f"/companies/{company_id}/connections", json={"platformKey": platform_key}
            )
        )

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self.http.request(method, f"/_sandbox{path}", **kwargs)
        assert answer.is_success, answer.text
        return answer.json() if answer.content else None

    def authorize(self, company_id: str, connection_id: str) -> Any:
        return self.admin("POST", f"/companies/{company_id}/connections/{connection_id}/authorize")

    def state(self) -> dict[str, Any]:
        return dict(self.admin("GET", "/state"))

    def faults(self, rules: list[dict[str, Any]]) -> None:
        self.admin("POST", "/faults", json=rules)

    @staticmethod
    def _ok(answer: httpx.Response) -> dict[str, Any]:
        assert answer.is_success, answer.text
        return dict(answer.json())

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def secret() -> str:
    return generate_secret()


@pytest.fixture
def serve_port() -> int:
    return free_port()


@pytest.fixture
def codat(secret: str, serve_port: int) -> Iterator[Codat]:
    url = f"http://127.0.0.1:{serve_port}/webhooks/codat"
    with SandboxServer(
        api_key=API_KEY, webhook_url=url, secrets=[secret], retry_delays=(0, 0.2, 0.5, 1, 2, 3)
    ) as server:
        client = Codat(server)
        yield client
        client.close()


@pytest.fixture
def serve(
    request: pytest.FixtureRequest, tmp_path: Path, codat: Codat, secret: str, serve_port: int
) -> Iterator[Serve]:
    """`serve` in a thread of the test process; a real process for tests marked
    `serve_process` (those that kill it or read what only a process has); more environment
    from a `serve_env` marker."""
    kind = ServeProcess if request.node.get_closest_marker("serve_process") else ServeThread
    extra = request.node.get_closest_marker("serve_env")
    server = kind(
        tmp_path / "processor.db",
        {
            "CODAT_API_KEY": API_KEY,
            "CODAT_BASE_URL": codat.url,
            "CODAT_WEBHOOK_SECRET": secret,
            **(extra.kwargs if extra else {}),
        },
        port=serve_port,
    )
    with server:
        yield server
