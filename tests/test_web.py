"""The web page in a real browser (Debian's Chromium driven by Playwright) against the real service."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.processes import ROOT, Service, start_service
from tests.test_accounts import make_key

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
# Playwright cannot download its own browsers here; Debian's Chromium runs headless, offline.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
# Every prompt carries this run's mark: a service started on a reused data folder may still hold jobs
# of an earlier run, and a test must find its own.
RUN = uuid.uuid4().hex[:6]
# The animals provider draws each image this long: a 2-image job takes a moment, a 60-image one a minute.
DELAY = 0.3

if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip("Chromium is not installed (apt-get install chromium); CI installs it", allow_module_level=True)


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    # A fresh folder others may traverse: as root, the embedded PostgreSQL would otherwise keep its
    # files under /var/lib/pgembedded by path, and a later run on the same path would find this
    # run's jobs (whose images are gone with this folder).
    folder = Path(tempfile.mkdtemp(prefix="web-test-"))
    folder.chmod(0o755)
    running = start_service(
        folder, {"IMAGE_PROVIDER_DELAY": str(DELAY), "MAX_IMAGES_PER_JOB": "60", "PROVIDERS": "animals,noop"}
    )
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest_asyncio.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


class Console:
    """Every console error and uncaught exception of a page; a test ends by asserting there were none."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        self.failed: list[str] = []  # requests that got no full answer (says which, when an error has no URL)
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("requestfailed", lambda request: self.failed.append(f"{request.url}: {request.failure}"))

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"{message.text} ({message.location.get('url', '')})")

    def assert_clean(self, *expected: str) -> None:
        """No errors but the `expected` ones (patterns), e.g. the 422 a test provoked on purpose."""
        unexpected = [e for e in self.errors if not any(re.search(p, e) for p in expected)]
        assert not unexpected, (unexpected, self.failed)


@pytest_asyncio.fixture
async def page(browser: Browser, service: Service) -> AsyncIterator[tuple[Page, Console]]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    opened = await context.new_page()
    console = Console(opened)
    await opened.goto(service.url)
    await expect(opened.locator("#connection")).to_have_attribute("data-state", "live")
    # Set after load: if the page ever reloads itself, the marker is gone.
    await opened.evaluate("window.notReloaded = true")
    yield opened, console
    assert await opened.evaluate("window.notReloaded === true"), "the page reloaded itself"
    await context.close()


def job_card(page: Page, text: str) -> Any:
    return page.get_by_test_id("job").filter(has_text=text)


async def natural_widths(card: Any) -> list[int]:
    widths: list[int] = await card.locator("img").evaluate_all(
        "images => Promise.all(images.map(i => i.decode().then(() => i.naturalWidth, () => 0)))"
    )
    return widths


async def save_screenshot(page: Page, name: str, tmp_path: Path) -> Path:
    path = tmp_path / name
    await page.screenshot(path=path, full_page=True)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(path, ARTIFACTS / name)
    return path


async def test_a_job_submitted_through_the_form_completes_live(
    page: tuple[Page, Console], service: Service, tmp_path: Path
) -> None:
    tab, console = page
    form = tab.get_by_test_id("new-job")
    await form.locator("[name=prompt]").fill(f"a fox asleep in fresh snow {RUN}")
    await form.locator("[name=numImages]").fill("3")
    await form.locator("[name=provider]").select_option("animals")
    await form.get_by_role("button", name="Generate").click()

    card = job_card(tab, f"a fox asleep in fresh snow {RUN}")
    await expect(card).to_have_count(1)
    await expect(card).to_have_attribute("data-status", "completed", timeout=20_000)
    await expect(card.locator("img")).to_have_count(3)
    assert await natural_widths(card) == [256, 256, 256]
    await expect(card.locator(".progress-text")).to_contain_text("Finished")

    jobs = httpx.get(f"{service.url}/generations").json()
    assert [job["prompt"] for job in jobs if job["prompt"] == f"a fox asleep in fresh snow {RUN}"]
    await save_screenshot(tab, "web-page.png", tmp_path)
    console.assert_clean()


async def test_a_job_created_through_the_api_appears_and_fills_in(page: tuple[Page, Console], service: Service) -> None:
    tab, console = page
    created = httpx.post(f"{service.url}/generations", json={"numImages": 2, "prompt": f"an owl made by curl {RUN}"})
    assert created.status_code == 202

    card = job_card(tab, f"an owl made by curl {RUN}")
    await expect(card).to_have_count(1)
    await expect(card).to_have_attribute("data-status", "completed", timeout=20_000)
    assert await natural_widths(card) == [256, 256]
    # Newest first: the job just made leads the list.
    await expect(tab.get_by_test_id("job").first).to_contain_text(f"an owl made by curl {RUN}")
    console.assert_clean()


async def test_a_video_made_through_the_form_plays_in_its_card(page: tuple[Page, Console]) -> None:
    tab, console = page
    form = tab.get_by_test_id("new-job")
    await form.get_by_label("Video").check()
    await expect(form.locator("[name=numImages]")).to_be_hidden()
    await form.locator("[name=prompt]").fill(f"a hummingbird hovering {RUN}")
    await form.locator("[name=durationSeconds]").fill("2")
    await form.locator("[name=aspectRatio]").select_option("16:9")
    await form.get_by_role("button", name="Generate").click()

    card = job_card(tab, f"a hummingbird hovering {RUN}")
    await expect(card).to_have_attribute("data-status", "completed", timeout=30_000)
    await expect(card.locator("video")).to_have_count(1)
    # The browser decoded the MP4's header: it knows the frame size the job asked for.
    size = await card.locator("video").evaluate(
        """video => new Promise((resolve) => {
            const done = () => resolve([video.videoWidth, video.videoHeight, video.error && video.error.code]);
            if (video.readyState >= 1 || video.error) done();
            video.addEventListener("loadedmetadata", done, { once: true });
            video.addEventListener("error", done, { once: true });
        })"""
    )
    assert size == [448, 256, None]
    console.assert_clean()


async def test_a_slow_job_is_canceled_from_its_card(page: tuple[Page, Console], service: Service) -> None:
    tab, console = page
    created = httpx.post(f"{service.url}/generations", json={"numImages": 60, "prompt": f"a very slow bear {RUN}"})
    job_id = created.json()["jobId"]

    card = job_card(tab, f"a very slow bear {RUN}")
    await expect(card).to_have_attribute("data-status", re.compile("pending|processing"))
    await card.get_by_role("button", name=re.compile("^Cancel")).click()

    await expect(card).to_have_attribute("data-status", "canceled")
    await expect(card.get_by_role("button", name=re.compile("^Cancel"))).to_be_hidden()
    canceled = httpx.get(f"{service.url}/generations/{job_id}").json()
    assert canceled["status"] == "canceled"
    await expect(card.locator("img")).to_have_count(0)
    # A canceled job's files are deleted: a picture of it still loading when they go may fail.
    console.assert_clean(job_id)


async def test_a_refused_job_is_explained_in_words(page: tuple[Page, Console]) -> None:
    tab, console = page
    form = tab.get_by_test_id("new-job")
    await form.locator("[name=numImages]").fill("61")
    await form.get_by_role("button", name="Generate").click()

    alert = tab.locator("#form-error")
    await expect(alert).to_be_visible()
    await expect(alert).to_contain_text("numImages: must be at most 60 (MAX_IMAGES_PER_JOB)")
    await expect(tab.get_by_test_id("job").filter(has_text="61 images")).to_have_count(0)
    console.assert_clean("status of 422")


async def test_every_control_has_an_accessible_name(page: tuple[Page, Console]) -> None:
    tab, console = page
    for view in ("#/", "#/chat"):
        await tab.evaluate(f"location.hash = {view!r}")
        await expect(tab.locator("#chat-view")).to_be_visible(visible=view == "#/chat")
        nameless = await tab.evaluate(
            """() => [...document.querySelectorAll('input, select, textarea, button, a')]
                .filter(el => !el.closest('[hidden], dialog:not([open]), template'))
                .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                              && !el.textContent.trim())
                .map(el => el.outerHTML.slice(0, 80))"""
        )
        assert nameless == [], view
    console.assert_clean()


async def test_the_page_fits_a_phone(browser: Browser, service: Service, tmp_path: Path) -> None:
    context = await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, color_scheme="dark")
    phone = await context.new_page()
    console = Console(phone)
    httpx.post(f"{service.url}/generations", json={"numImages": 4, "prompt": f"a penguin on a phone {RUN}"})
    try:
        await phone.goto(service.url)
        await expect(job_card(phone, f"a penguin on a phone {RUN}")).to_have_attribute("data-status", "completed")
        overflow = await phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow}px wider than the phone"
        await save_screenshot(phone, "web-page-phone.png", tmp_path)
        console.assert_clean()
    finally:
        await context.close()


async def test_the_assistant_offers_options_and_shows_the_result_in_the_conversation(
    page: tuple[Page, Console], tmp_path: Path
) -> None:
    tab, console = page
    await tab.get_by_role("link", name="Assistant").click()
    form = tab.get_by_test_id("chat-form")
    await form.get_by_label("Message").fill(f"a lighthouse at dusk {RUN}")
    await form.get_by_role("button", name="Send").click()

    user = tab.locator("[data-testid=message][data-role=user]")
    await expect(user).to_have_text(f"a lighthouse at dusk {RUN}")
    options = tab.get_by_test_id("option")
    await expect(options.first).to_be_visible()
    assert 2 <= await options.count() <= 4
    await expect(tab.locator("#chats a[aria-current=page]")).to_contain_text(f"a lighthouse at dusk {RUN}")

    await options.first.click()
    picture = tab.locator("[data-testid=message][data-role=assistant] [data-testid=media] img")
    await expect(picture).to_have_count(1, timeout=20_000)
    assert await natural_widths(tab.locator("#messages")) == [256]
    await save_screenshot(tab, "web-chat.png", tmp_path)

    # The option ran as an ordinary job: the gallery shows it too.
    await tab.get_by_role("link", name="Create").click()
    await expect(job_card(tab, f"a lighthouse at dusk {RUN}")).to_have_attribute("data-status", "completed")
    console.assert_clean()


async def test_the_page_asks_for_the_key_once_when_auth_is_required(
    browser: Browser, database_url: str, engine: AsyncEngine
) -> None:
    _, key = await make_key(engine, "web page")
    folder = Path(tempfile.mkdtemp(prefix="web-auth-"))
    folder.chmod(0o755)
    secured = start_service(folder, {"DATABASE_URL": database_url, "AUTH_REQUIRED": "true"})
    context = await browser.new_context()
    tab = await context.new_page()
    console = Console(tab)
    try:
        secured.wait_ready()
        await tab.goto(secured.url)
        dialog = tab.locator("#key-dialog")
        await expect(dialog).to_be_visible()
        await dialog.get_by_label("API key").fill(key)
        await dialog.get_by_role("button", name="Save key").click()
        await expect(tab.locator("#connection")).to_have_attribute("data-state", "live")
        await tab.get_by_test_id("new-job").locator("[name=prompt]").fill(f"a key-holding koala {RUN}")
        await tab.get_by_role("button", name="Generate").click()
        card = job_card(tab, f"a key-holding koala {RUN}")
        await expect(card).to_have_attribute("data-status", "completed", timeout=20_000)
        assert await natural_widths(card) == [256, 256]
        assert await tab.evaluate("localStorage.length") == 1
        await expect(dialog).to_be_hidden()
        # Only the requests made before the key was given were refused.
        console.assert_clean("status of 401")
    finally:
        await context.close()
        secured.stop()
        shutil.rmtree(folder, ignore_errors=True)
