"""A bare Starlette endpoint: the baseline intake is compared with, on the same server settings."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def receive(request: Request) -> Response:
    await request.body()
    return JSONResponse({"status": "stored"})


app = Starlette(routes=[Route("/webhooks/codat", receive, methods=["POST"])])
