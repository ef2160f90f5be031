"""The API browser works offline: /docs and /redoc load only assets this service serves."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from phasegate.service import create_app
from phasegate.service.docs import ASSET_FILES, docs_assets_dir, install_api_docs
from support import CHROMIUM, Harness, UvicornThread, require_chromium


class _AssetLinks(HTMLParser):
    """Collects every URL a page would load: scripts, styles, icons, images."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src", "iframe": "src"}
        for name, value in attrs:
            if name == wanted.get(tag) and value:
                self.urls.append(value)


def _asset_urls(html: str) -> list[str]:
    parser = _AssetLinks()
    parser.feed(html)
    return parser.urls


@pytest.fixture
def client(harness: Harness) -> TestClient:
    return TestClient(create_app(harness.runtime))


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}),
        ("/redoc", {"redoc.standalone.js", "favicon.png"}),
    ],
)
def test_the_api_browser_loads_only_local_assets_that_answer(
    client: TestClient, page: str, expected: set[str]
) -> None:
    """Every asset the page references is a path on this service that answers 200 with it."""
    response = client.get(page)
    assert response.status_code == 200
    urls = _asset_urls(response.text)
    assert {url.rsplit("/", 1)[-1] for url in urls} == expected
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme, url
        assert not parts.netloc, url
        assert url.startswith("/docs/assets/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        name = url.rsplit("/", 1)[-1]
        assert asset.content == (docs_assets_dir() / name).read_bytes()
    assert not re.search(r"https?://", response.text), "the page names an outside URL"


def test_the_swagger_page_reads_this_services_openapi_document(client: TestClient) -> None:
    """Swagger UI is pointed at /openapi.json, which answers; the outside validator is off."""
    html = client.get("/docs").text
    assert "url: '/openapi.json'" in html
    assert '"validatorUrl": null' in html
    assert client.get("/openapi.json").json()["info"]["title"] == "phasegate"


def test_the_docs_routes_stay_out_of_the_openapi_document(client: TestClient) -> None:
    """The browser's own pages and assets are not API operations."""
    paths = client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith(("/docs", "/redoc"))]


def test_every_asset_the_pages_need_is_installed() -> None:
    """The assets come from an installed package, each a real, non-empty file."""
    folder = docs_assets_dir()
    assert "site-packages" in str(folder)
    for name in ASSET_FILES:
        assert (folder / name).stat().st_size > 1000, name


def test_an_app_with_fastapis_cdn_docs_is_refused() -> None:
    """Installing over FastAPI's own CDN pages fails loudly instead of being shadowed."""
    with pytest.raises(ValueError, match="docs_url=None"):
        install_api_docs(FastAPI())


def test_a_root_path_prefixes_every_asset_url(harness: Harness) -> None:
    """Behind a proxy prefix, the page's asset and OpenAPI URLs carry the prefix."""
    client = TestClient(create_app(harness.runtime), root_path="/phasegate")
    html = client.get("/docs").text
    assert "url: '/phasegate/openapi.json'" in html
    assert all(url.startswith("/phasegate/docs/assets/") for url in _asset_urls(html))


@pytest.mark.slow
def test_headless_chromium_renders_the_api_with_outside_requests_blocked(
    harness: Harness,
) -> None:
    """Swagger UI draws every operation while any request off loopback is aborted."""
    require_chromium()
    from playwright.sync_api import Route, sync_playwright

    outside: list[str] = []

    def only_loopback(route: Route) -> None:
        host = urlsplit(route.request.url).hostname
        if host in {"127.0.0.1", "localhost"}:
            route.continue_()
            return
        outside.append(route.request.url)
        route.abort()

    with UvicornThread(create_app(harness.runtime)) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
        )
        page = browser.new_page()
        page.route("**/*", only_loopback)
        page.goto(server.url + "/docs")
        page.wait_for_selector(".opblock", timeout=20_000)
        summaries = page.locator(".opblock-summary-path").all_inner_texts()
        redoc = browser.new_page()
        redoc.route("**/*", only_loopback)
        redoc.goto(server.url + "/redoc")
        redoc.wait_for_selector("h1", timeout=20_000)
        redoc_loaded = redoc.evaluate("typeof Redoc.init")
        browser.close()
    assert outside == []
    assert any("/v1/completions" in text for text in summaries), summaries
    assert redoc_loaded == "function"


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_every_reference_in_the_openapi_document_resolves(client: TestClient) -> None:
    """Each $ref names a schema the document defines, so both browsers can draw every body."""
    document = client.get("/openapi.json").json()
    schemas = document.get("components", {}).get("schemas", {})
    dangling = [
        ref for ref in _refs(document) if ref.removeprefix("#/components/schemas/") not in schemas
    ]
    assert dangling == []
