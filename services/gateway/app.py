"""The HTTP gateway: validates uploads, enqueues jobs by task name, answers polls. No TensorFlow here."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from prometheus_client import make_asgi_app
from prometheus_fastapi_instrumentator import Instrumentator

from echovids import __version__
from echovids.settings import get_settings
from services.gateway import errors
from services.gateway.guard import RequestGuard, cors_origins
from services.gateway.routers import availability, config, health, library, library_audio, searches, web


def create_app() -> FastAPI:
    app = FastAPI(
        title="Echovids",
        version=__version__,
        description="Audio by example: upload a few seconds of sound, get the library clips that sound most "
        "alike, each with the moment of best match.",
    )
    errors.install(app)
    app.include_router(searches.router)
    app.include_router(health.router)
    app.include_router(availability.router)
    app.include_router(library.router)
    app.include_router(config.router)
    app.include_router(library_audio.router)
    app.include_router(web.router)
    app.mount("/static", StaticFiles(directory=web.STATIC_DIR), name="static")
    Instrumentator().instrument(app)
    app.mount("/metrics", make_asgi_app())
    # In front of FastAPI's body parsing: size, key, rate and body deadline are checked from the headers.
    app.add_middleware(RequestGuard)
    # Outside the guard, so that a configured origin can read its refusals too. No origins: no CORS headers at
    # all, and browsers keep the API to the gateway's own page.
    origins = cors_origins(get_settings())
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Location", "Retry-After"],
        )
    return app


app = create_app()
