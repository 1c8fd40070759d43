"""Read-only PostgreSQL connections for queries: a pool of a configured size.

A connection is a server process, so the query threads share a few (`psycopg_pool`) rather
than keep one each. The pool checks a connection before lending it, and replaces one the server
dropped, so queries recover by themselves when a lost server comes back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool

from store.errors import StoreError
from store.postgres import PostgresStore
from store.postgres.connected import configure
from store.urls import redact_url, scrub


class PostgresReaders:
    """Lends read-only stores over a pool of at most `size` connections."""

    def __init__(self, url: str, *, size: int, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = (
            psycopg_pool.ConnectionPool(
                url,
                min_size=1,
                max_size=size,
                kwargs={"autocommit": True, "connect_timeout": max(1, round(timeout))},
                configure=lambda conn: configure(conn, timeout=timeout, readonly=True),
                check=psycopg_pool.ConnectionPool.check_connection,
                timeout=timeout,
                name="readers",
                open=True,
            )
        )

    @contextmanager
    def reading(self) -> Iterator[PostgresStore]:
        try:
            with self._pool.connection() as conn:
                yield PostgresStore(
                    conn, self.url, readonly=True, timeout=self.timeout, pooled=True
                )
        except psycopg_pool.PoolTimeout as error:
            message = scrub(str(error), self.url)
            raise StoreError(
                f"no connection to database {redact_url(self.url)!r} within "
                f"{self.timeout:g} s: {message}"
            ) from None

    def close(self) -> None:
        self._pool.close()
