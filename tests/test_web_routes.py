"""The page's routes in-process: the HTML, its static files, and the provider list it offers."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import AppFactory

pytestmark = pytest.mark.usefixtures("engine")


async def test_the_page_is_served_at_the_root(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert 'data-testid="new-job"' in page
    for name in ("prompt", "numImages", "provider", "kind"):
        assert f'name="{name}"' in page
    # Nothing is loaded from another site: every src and href is local or an in-page anchor.
    for url in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert url.startswith(("/static/", "#")), url


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/static/app.js", "text/javascript"),
        ("/static/app.css", "text/css"),
        ("/static/favicon.svg", "image/svg+xml"),
    ],
)
async def test_static_files_are_served_with_their_types(
    client: httpx.AsyncClient, path: str, content_type: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(content_type)
    # An XML namespace names, it does not load.
    urls = [u for u in re.findall(r"https?://[^\s\"')]+", response.text) if not u.startswith("http://www.w3.org/")]
    assert urls == []


async def test_a_missing_static_file_is_a_problem_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/static/nope.js")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_static_files_refuse_writes_naming_what_they_allow(client: httpx.AsyncClient) -> None:
    response = await client.post("/static/app.js", json={})
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert response.json()["detail"] == "POST is not allowed here; use GET or HEAD"


async def test_providers_lists_the_enabled_ones_default_first(make_client: AppFactory) -> None:
    client = await make_client(providers="noop,animals", default_provider="noop", worker_enabled=False)
    response = await client.get("/providers")
    assert response.status_code == 200
    assert response.json() == [
        {"name": "noop", "default": True, "kinds": ["image", "video"]},
        {"name": "animals", "default": False, "kinds": ["image", "video"]},
    ]
