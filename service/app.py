"""The sharing service as an ASGI app (FastAPI): the Delta Sharing protocol (service.delta) and
govshare's agent protocol (service.agent_api), behind the access recorder (service.access).
OpenAPI at /openapi.json, documentation at /docs.
"""

from __future__ import annotations

from fastapi import FastAPI

from service import agent_api, delta
from service.access import AccessRecorder
from service.context import ServiceContext


def create_app(ctx: ServiceContext) -> FastAPI:
    app = FastAPI(title="govshare sharing service", version="1",
                  description="Delta Sharing (share `govshare`, schema `base`) for stock clients' plain view; "
                              "the agent protocol (/agent/v1) for enrolled subscriber agents.")
    app.state.ctx = ctx
    app.include_router(delta.router)
    app.include_router(agent_api.router)
    app.add_middleware(AccessRecorder)
    return app
