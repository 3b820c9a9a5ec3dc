"""Browser tests' machinery (a pytest plugin, see conftest.py): Debian's Chromium driven by
Playwright, pages watched for Content-Security-Policy violations and script errors, a
screenshot of each page when a test fails; and what the browser tests share.

Without /usr/bin/chromium the browser tests skip, and fail when CI=true. Playwright never
downloads a browser here: it is pointed at Debian's.
"""
import os

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
WAIT_MS = 10_000  # how long a page may take to show what a test expects (except where timed)


@pytest.fixture(scope="module")
def browser():
    """Chromium, headless, with a fresh profile (Playwright's launch makes a temporary
    user-data dir and removes it on close); never a browser Playwright downloads."""
    if not os.access(CHROMIUM, os.X_OK):
        message = "Chromium is not installed at %s (apt-get install -y chromium)" % CHROMIUM
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class PageOpener:
    """Opens pages, each in a browser context of its own (its own sessionStorage, as another
    person's browser), and keeps what each reports."""

    def __init__(self, browser, directory):
        self.browser, self.directory = browser, directory
        self.pages, self.problems = [], []

    def __call__(self, url=None, violations_expected=False):
        context = self.browser.new_context(locale="en-US", timezone_id="UTC",
                                           viewport={"width": 1000, "height": 760})
        page = context.new_page()
        page.on("pageerror", lambda error: self.problems.append("%s: %s" % (page.url, error)))
        if not violations_expected:
            page.on("console", lambda message: "Content Security Policy" in message.text
                    and self.problems.append("%s: %s" % (page.url, message.text)))
        self.pages.append(page)
        if url:
            page.goto(url)
        return page

    def screenshots(self):
        paths = []
        for number, page in enumerate(self.pages):
            path = self.directory / ("page-%d.png" % number)
            try:
                page.screenshot(path=path, full_page=True)
                paths.append("%s (%s)" % (path, page.url))
            except Exception as error:  # a crashed page: say so, keep the others
                paths.append("page %d: no screenshot: %s" % (number, error))
        return paths

    def close(self):
        for page in self.pages:
            page.context.close()


@pytest.fixture
def open_page(browser, tmp_path):
    opener = PageOpener(browser, tmp_path)
    yield opener
    try:
        assert opener.problems == [], "\n".join(opener.problems)
    except AssertionError:
        print("screenshots:\n" + "\n".join(opener.screenshots()))
        raise
    finally:
        opener.close()


def sign_in(base_url, user_id, key=None, **fields):
    headers = {"X-API-Key": key} if key else {}
    response = requests.post(base_url + "/user/select", json={"user_id": user_id, **fields},
                             headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def current_user(base_url, key=None):
    headers = {"X-API-Key": key} if key else {}
    return requests.get(base_url + "/user", headers=headers, timeout=10).json().get("user")


def expect_live(page):
    expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=WAIT_MS)


def card(page):
    return page.locator("#current .profile")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A browser test that fails saves a screenshot of every page it opened and names the
    files in its report."""
    outcome = yield
    report = outcome.get_result()
    opener = getattr(item, "funcargs", {}).get("open_page")
    if report.when == "call" and report.failed and opener is not None:
        report.sections.append(("screenshots", "\n".join(opener.screenshots())))
