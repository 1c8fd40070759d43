"""Running the stand-in: on a free loopback port in a thread, or in the foreground."""

import logging
import socket
import threading
import time
from collections.abc import Sequence
from typing import Self

import uvicorn
from starlette.types import ASGIApp

from processor.sandbox.app import create_app
from processor.sandbox.sender import DEFAULT_RETRY_DELAYS
from processor.sandbox.state import Sandbox

log = logging.getLogger("processor.sandbox")


class LoopbackServer:
    """Runs an ASGI app under uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, app: ASGIApp, *, port: int = 0, startup_timeout: float = 10.0) -> None:
        self.app = app
        self.port = port
        self.startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, timeout_graceful_shutdown=2
        )
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise RuntimeError(f"The server on {self.url} did not start.")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class SandboxServer(LoopbackServer):
    """The sandbox on a free loopback port: `with SandboxServer(api_key=...) as sb: sb.url`."""

    def __init__(
        self,
        *,
        api_key: str,
        webhook_url: str | None = None,
        secrets: Sequence[str] = (),
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        port: int = 0,
        data_read_delay: float | None = None,
    ) -> None:
        app = create_app(
            api_key,
            webhook_url=webhook_url,
            secrets=secrets,
            retry_delays=retry_delays,
            data_read_delay=data_read_delay,
        )
        super().__init__(app, port=port)
        self.api_key = api_key
        self.sandbox: Sandbox = app.state.sandbox


def serve_sandbox(
    host: str,
    port: int,
    api_key: str,
    webhook_url: str | None,
    secrets: Sequence[str],
    data_read_delay: float | None = None,
) -> None:
    """Run the sandbox in the foreground until interrupted; log every webhook delivery attempt."""
    app = create_app(
        api_key, webhook_url=webhook_url, secrets=secrets, data_read_delay=data_read_delay
    )
    if webhook_url:
        log.info(
            "webhooks go to %s, signed with %d secret(s); each attempt is logged below",
            webhook_url,
            len(secrets),
        )
    else:
        log.warning(
            "no webhook URL: webhooks are recorded (GET /_sandbox/state) but not sent until "
            "POST /_sandbox/config sets webhookUrl and secrets"
        )
    uvicorn.run(app, host=host, port=port, log_level="info")
