"""``GET /``: a page to try ``enfold serve`` from a browser (enfold/runtime/static/index.html).

One static file with its CSS and JavaScript inline: no build step, nothing fetched from another
host (the server may be offline). The page reads ``GET /v1/metadata`` and posts to
``POST /v1/restore`` or ``POST /v1/classify`` like any other client.

Note: no ``from __future__ import annotations`` here: FastAPI reads the endpoint signatures.
"""

from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import APIRouter

# Shipped as package data (pyproject's [tool.setuptools.package-data]).
PAGE = ("enfold.runtime", "static/index.html")
# The page runs only its own inline script and shows only its own uploads and results (blob:
# URLs); it may call this server and nothing else.
PAGE_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'unsafe-inline'; "
                                "style-src 'unsafe-inline'; img-src 'self' blob: data:; "
                                "connect-src 'self'; form-action 'none'; base-uri 'none'; "
                                "frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def page_html() -> str:
    """The page's HTML, read from the installed package."""
    package, name = PAGE
    return files(package).joinpath(name).read_text(encoding="utf-8")


def page_router() -> "APIRouter":
    """A router answering ``GET /`` with the page (left out of the OpenAPI schema: not API)."""
    from fastapi import APIRouter
    from fastapi.responses import HTMLResponse

    html = page_html()  # read once: a missing file fails at start-up, not on the first visit
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(html, headers=PAGE_HEADERS)

    return router
