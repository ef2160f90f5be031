"""The API browser, ``/docs`` (Swagger UI) and ``/redoc``, served with no network at all.

FastAPI's own pages load Swagger UI and ReDoc from a public CDN, so on a closed
network they are blank. These are FastAPI's documented self-hosted pages
(``get_swagger_ui_html``/``get_redoc_html`` with a ``StaticFiles`` mount) over the
Swagger UI and ReDoc builds that the ``fastapi-offline`` wheel ships (MIT; Swagger UI
Apache-2.0, ReDoc MIT): the page and every asset it loads come from this service.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs/assets"
_SAME_ORIGIN_ONLY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:; connect-src 'self'"
)
ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
ASSETS_PACKAGE = "fastapi_offline"

# Swagger UI's validator badge would call validator.swagger.io: off, like every other
# outside request.
_SWAGGER_PARAMETERS: dict[str, Any] = {"validatorUrl": None}


def docs_assets_dir() -> Path:
    """The installed folder holding Swagger UI's and ReDoc's scripts, styles and icon."""
    folder = Path(str(resources.files(ASSETS_PACKAGE) / "static"))
    missing = [name for name in ASSET_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder}: the API browser's assets {', '.join(missing)} are missing; "
            f"reinstall {ASSETS_PACKAGE.replace('_', '-')}"
        )
    return folder


def install_api_docs(app: FastAPI) -> None:
    """Serve ``/docs``, ``/redoc`` and their assets on ``app`` from installed files.

    ``app`` must be created with ``docs_url=None, redoc_url=None`` so that FastAPI's
    CDN-backed pages do not answer first.
    """
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError(
            "create the FastAPI app with docs_url=None and redoc_url=None: "
            "install_api_docs serves /docs and /redoc itself"
        )
    if app.openapi_url is None:
        raise ValueError("the API browser needs the OpenAPI document: app.openapi_url is None")
    openapi_url = app.openapi_url
    app.mount(ASSETS_URL, StaticFiles(directory=docs_assets_dir()), name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - API",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), **_SWAGGER_PARAMETERS},
        )

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
        # ReDoc's menu footer always shows a logo from its CDN; the page may load nothing
        # from outside, so the browser is told so before it asks.
        page.headers["Content-Security-Policy"] = _SAME_ORIGIN_ONLY
        return page
