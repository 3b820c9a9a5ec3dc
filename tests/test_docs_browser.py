"""GET /docs in Debian's Chromium (see browser.py) against real `userservice serve`
processes, on both backends: Swagger UI renders every operation of /openapi.json from files
the service serves itself, and "Try it out" works, with and without an API key."""
import json
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import expect

from browser import WAIT_MS, sign_in

API_KEY = "docs-key-0a7e"


def operations(document):
    return {(method, path) for path, item in document["paths"].items() for method in item
            if method in ("get", "head", "post", "put", "patch", "delete")}


@pytest.mark.parametrize("keyed", [False, True], ids=["open", "keyed"])
def test_docs_render_every_endpoint_and_try_it_out_returns_the_current_user(database_url, serve, open_page, keyed):
    key = API_KEY if keyed else None
    server = serve(database_url, extra_env={"USERSERVICE_API_KEY": API_KEY} if keyed else None)
    profile = sign_in(server.url, "auth0|ada", key=key, name="Ada Lovelace")
    document = requests.get(server.url + "/openapi.json", headers={"X-API-Key": API_KEY}, timeout=10).json()
    page = open_page()
    hosts = []
    page.on("request", lambda request: hosts.append(urlsplit(request.url).netloc))
    page.goto(server.url + "/docs")
    if keyed:
        page.get_by_label("API key").fill(API_KEY)
        page.get_by_role("button", name="Use this key").click()

    blocks = page.locator(".opblock")
    expect(blocks).to_have_count(len(operations(document)), timeout=WAIT_MS)
    rendered = {(block.locator(".opblock-summary-method").inner_text().lower(),
                 block.locator(".opblock-summary-path").get_attribute("data-path")) for block in blocks.all()}
    assert rendered == operations(document)

    snapshot = page.locator("#operations-default-userSnapshot")
    snapshot.locator(".opblock-summary").click()
    snapshot.get_by_role("button", name="Try it out").click()
    snapshot.get_by_role("button", name="Execute").click()
    answer = snapshot.locator(".live-responses-table .response")
    expect(answer.locator(".response-col_status")).to_have_text("200", timeout=WAIT_MS)
    body = answer.locator(".highlight-code pre")
    assert json.loads(body.inner_text()) == {"user": profile}
    assert set(hosts) == {urlsplit(server.url).netloc}  # nothing from anywhere else
