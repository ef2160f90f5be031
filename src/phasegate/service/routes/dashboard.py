"""The dashboard at ``/``: asks for the token once, then keeps a session cookie."""

from __future__ import annotations

from html import escape
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from phasegate.errors import ValidationError
from phasegate.service.auth import COOKIE_NAME
from phasegate.service.body import read_body
from phasegate.service.context import ServiceContext
from phasegate.service.dashboard import render_dashboard, render_login
from phasegate.service.dashboard_run import read_run, render_run_page

MAX_LOGIN_BYTES = 4096


def _with_session(response: Response, request: Request, value: str) -> Response:
    response.set_cookie(
        COOKIE_NAME,
        value,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


def router(context: ServiceContext) -> APIRouter:
    """The dashboard and its sign-in."""
    auth = context.auth
    name = context.runtime.pipeline.name
    routes = APIRouter(include_in_schema=False)

    def login_page(error: str | None = None) -> HTMLResponse:
        return HTMLResponse(render_login(name, error=error), status_code=401)

    @routes.get("/", response_class=HTMLResponse, summary="Dashboard")
    async def get_dashboard(request: Request, limit: int = 14) -> Response:
        given = request.query_params.get("token")
        if given is not None and auth.enabled:
            # First visit with ?token=: keep it in a cookie, and out of the address bar.
            session = auth.session_for(given)
            if session is None:
                return login_page("wrong token")
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
            return _with_session(RedirectResponse(target, status_code=303), request, session)
        if not auth.can_read(request):
            return login_page()
        page = await run_in_threadpool(
            render_dashboard, context.runtime, limit=max(1, min(limit, 60))
        )
        return HTMLResponse(page)

    @routes.get("/runs/{run_key}", response_class=HTMLResponse, summary="One run's page")
    async def get_run_page(request: Request, run_key: str) -> Response:
        if not auth.can_read(request):
            return login_page()
        try:
            records = await run_in_threadpool(read_run, context.runtime, run_key)
        except ValidationError as exc:
            return HTMLResponse(f"<p>{escape(exc.message)}</p>", status_code=422)
        if records.empty:
            return HTMLResponse(
                f"<p>no records for run {escape(run_key)}</p><p><a href='../'>all runs</a></p>",
                status_code=404,
            )
        return HTMLResponse(render_run_page(context.runtime.pipeline, records))

    @routes.post("/login", summary="Sign in to the dashboard")
    async def post_login(request: Request) -> Response:
        form = parse_qs((await read_body(request, MAX_LOGIN_BYTES)).decode("utf-8", "replace"))
        session = auth.session_for(form.get("token", [""])[0]) if auth.enabled else ""
        if session is None:
            return login_page("wrong token")
        response = RedirectResponse("/", status_code=303)
        return _with_session(response, request, session) if session else response

    return routes
