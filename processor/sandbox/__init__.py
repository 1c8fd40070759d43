"""A local stand-in for Codat: its onboarding API, errors and webhooks, plus an admin API.

The API part answers like Codat's (see CODAT.md); `/_sandbox/...` lets tests and the demo play
the customer (authorize, fail, deauthorize), delete things, script faults and send webhooks.
State lives in memory; every mutation is synchronous, so the single event loop serialises them.

Modules: `errors` (Codat's error answers), `faults` (scripted misbehaviour), `idempotency`,
`state` (companies, connections, webhooks), `accounting_data` (what Codat's read of a company's
books gives Sync for Expenses), `api` (Codat's endpoints), `admin` (`/_sandbox`), `app` (routes
and the fault layer), `server` (running it).
"""

from processor.sandbox.app import create_app
from processor.sandbox.errors import PARTNER_EXPENSE_KEY, PARTNER_EXPENSE_NAME
from processor.sandbox.server import LoopbackServer, SandboxServer, serve_sandbox
from processor.sandbox.state import Sandbox

__all__ = [
    "PARTNER_EXPENSE_KEY",
    "PARTNER_EXPENSE_NAME",
    "LoopbackServer",
    "Sandbox",
    "SandboxServer",
    "create_app",
    "serve_sandbox",
]
