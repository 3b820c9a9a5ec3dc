"""GET / in Debian's Chromium (see browser.py) against real `userservice serve` processes,
on both backends: the signed-in user, live, through the stream; actions; reconnection; the
API key prompt; framing refused."""
import requests
from playwright.sync_api import expect

from browser import WAIT_MS, card, current_user, expect_live, sign_in

API_KEY = "browser-key-62f0"
RESTART_WAIT_MS = 20_000  # EventSource backs off while the server is down
PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9Q"
       "DwADhgGAWjR9awAAAABJRU5ErkJggg==")


def field(page, name):
    return card(page).locator('[data-field="%s"] dd' % name)


def row(page, name):
    return page.locator("#users li", has_text=name)


def full_profile(base_url):
    """A user with every field the page shows, set through the API."""
    profile = sign_in(base_url, "auth0|ada", name="Ada Lovelace", nickname="ada", email="ada@example.com",
                      picture="https://127.0.0.1:1/ada.png",  # never loads: the initials stand in
                      identities=[{"provider": "github", "user_id": "1815"}])
    allocation = {"id": "alloc", "user": profile["id"], "project": "p", "status": {"cloud": "RUNNING"},
                  "urls": {"base": {"status": "RUNNING", "url": "https://base.example"},
                           "id": {"status": "RUNNING", "url": "https://id.example"}}}
    for path, body in (("/user/update", {**profile, "allocation": allocation}),
                       ("/user/update/vanity", {"id": profile["id"], "vanityname": "ada"}),
                       ("/user/beta/status", {"user": profile["id"], "auth0": {"vision": {
                           "from": {"value": "2024-01-01T00:00:00+00:00"}, "continuous": True}}})):
        assert requests.post(base_url + path, json=body, timeout=10).status_code == 200
    return current_user(base_url)


def test_page_shows_the_signed_in_user_and_nobody_after_a_clear(database_url, serve, open_page):
    server = serve(database_url)
    sign_in(server.url, "auth0|grace", name="Grace Hopper", picture=PNG)
    profile = full_profile(server.url)
    page = open_page(server.url + "/")
    expect_live(page)
    expect(card(page).locator(".name")).to_have_text("Ada Lovelace")
    expect(card(page).locator(".initials")).to_have_text("AL")
    expect(field(page, "email")).to_have_text("ada@example.com")
    expect(field(page, "username")).to_have_text("@ada")
    expect(field(page, "vanity").locator("a")).to_have_attribute("href", "https://ada.pieces.cloud")
    expect(field(page, "beta")).to_have_text("since Jan 1, 2024, 12:00 AM")
    expect(field(page, "providers")).to_have_text("github (1815)")
    expect(field(page, "created")).to_contain_text(profile["created"]["value"][:4])
    expect(field(page, "updated")).to_contain_text(profile["updated"]["value"][:4])
    expect(field(page, "id")).to_have_text(profile["id"])
    expect(row(page, "Grace Hopper").locator("img")).to_be_visible()  # a picture that loads
    expect(row(page, "Ada Lovelace").locator(".badge")).to_be_visible()

    assert requests.post(server.url + "/user/clear", timeout=10).status_code == 204
    expect(page.locator("#nobody")).to_have_text("Nobody is signed in on this device.")
    expect(card(page)).to_have_count(0)
    expect(row(page, "Ada Lovelace").locator(".badge")).to_be_hidden()


def test_change_through_the_api_on_another_server_appears_within_a_second(database_url, serve, open_page):
    watched, other = serve(database_url), serve(database_url)
    page = open_page(watched.url + "/")
    expect_live(page)
    expect(page.locator("#nobody")).to_be_visible()
    page.evaluate("window.sameDocument = true")
    sign_in(other.url, "auth0|grace", name="Grace Hopper")  # acknowledged by another process
    expect(card(page).locator(".name")).to_have_text("Grace Hopper", timeout=1000)
    assert page.evaluate("window.sameDocument") is True  # not reloaded


def test_sign_out_from_the_page_clears_the_user_and_updates_a_second_page(database_url, serve, open_page):
    server = serve(database_url)
    sign_in(server.url, "auth0|ada", name="Ada Lovelace")
    first, second = open_page(server.url + "/"), open_page(server.url + "/")
    for page in (first, second):
        expect(card(page).locator(".name")).to_have_text("Ada Lovelace", timeout=WAIT_MS)
    first.get_by_role("button", name="Sign out").click()
    expect(second.locator("#nobody")).to_be_visible(timeout=WAIT_MS)
    expect(first.locator("#nobody")).to_be_visible()
    assert current_user(server.url) is None


def test_listed_user_is_made_current_and_disconnected_after_a_confirmation(database_url, serve, open_page):
    server = serve(database_url)
    ada = sign_in(server.url, "auth0|ada", name="Ada Lovelace")
    sign_in(server.url, "auth0|grace", name="Grace Hopper")
    page = open_page(server.url + "/")
    expect(card(page).locator(".name")).to_have_text("Grace Hopper", timeout=WAIT_MS)

    row(page, "Ada Lovelace").get_by_role("button", name="Make current").click()
    expect(card(page).locator(".name")).to_have_text("Ada Lovelace")
    assert current_user(server.url) == ada  # the stored profile, unchanged

    row(page, "Grace Hopper").get_by_role("button", name="Disconnect…").click()
    dialog = page.locator("#confirm")
    expect(dialog).to_contain_text("Disconnect Grace Hopper from this device?")
    dialog.get_by_role("button", name="Keep").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#users li")).to_have_count(2)
    row(page, "Grace Hopper").get_by_role("button", name="Disconnect…").click()
    dialog.get_by_role("button", name="Disconnect").click()
    expect(page.locator("#users li")).to_have_count(1)
    listed = requests.get(server.url + "/users", timeout=10).json()["iterable"]
    assert [user["name"] for user in listed] == ["Ada Lovelace"]


def test_page_reconnects_after_a_restart_and_shows_what_changed_meanwhile(database_url, serve, open_page,
                                                                        other_process):
    server = serve(database_url)
    sign_in(server.url, "auth0|ada", name="Ada Lovelace")
    page = open_page()
    resumed_from = []
    page.on("request", lambda request: "/user/stream" in request.url
            and resumed_from.append(request.all_headers().get("last-event-id")))
    page.goto(server.url + "/")
    expect(card(page).locator(".name")).to_have_text("Ada Lovelace", timeout=WAIT_MS)
    shown = int(page.locator("#current").get_attribute("data-seq"))

    server.stop()
    expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting", timeout=WAIT_MS)
    other_process("auth0|grace")  # a change while no server runs
    serve(database_url, port=server.port)
    expect(card(page).locator(".name")).to_have_text("auth0|grace", timeout=RESTART_WAIT_MS)
    expect_live(page)
    assert str(shown) in resumed_from  # EventSource resumed with the id it had shown last
    assert int(page.locator("#current").get_attribute("data-seq")) > shown


# Records every state #current shows from now on, as [seq, name or null].
RECORD_SHOWN = """() => {
  const current = document.getElementById("current");
  window.shown = [];
  new MutationObserver(() => window.shown.push(
    [Number(current.dataset.seq), current.querySelector(".name")?.textContent ?? null]
  )).observe(current, {attributes: true, childList: true});
}"""


def test_page_never_goes_back_to_a_state_older_than_one_shown(database_url, second_database_url, serve,
                                                             open_page):
    server = serve(database_url)
    for name in ("Ada", "Grace", "Hedy"):
        sign_in(server.url, "auth0|" + name.lower(), name=name)
    page = open_page(server.url + "/")
    expect(card(page).locator(".name")).to_have_text("Hedy", timeout=WAIT_MS)
    page.evaluate(RECORD_SHOWN)
    shown = int(page.locator("#current").get_attribute("data-seq"))

    server.stop()  # and back on a database whose history is shorter: a restored backup, say
    expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting", timeout=WAIT_MS)
    restored = serve(second_database_url, port=server.port)
    names = ["Older %d" % seq for seq in range(1, shown + 1)] + ["Newer"]
    sign_in(restored.url, "auth0|older", name=names[0])
    expect_live(page)
    for number, name in enumerate(names[1:], start=2):
        sign_in(restored.url, "auth0|%d" % number, name=name)
    expect(card(page).locator(".name")).to_have_text("Newer", timeout=WAIT_MS)
    assert page.evaluate("window.shown") == [[shown + 1, "Newer"]]


def test_page_asks_for_the_api_key_and_reports_a_wrong_one(database_url, serve, open_page):
    server = serve(database_url, extra_env={"USERSERVICE_API_KEY": API_KEY})
    sign_in(server.url, "auth0|ada", key=API_KEY, name="Ada Lovelace")
    page = open_page()
    sent = []
    page.on("request", lambda request: sent.append((request.url, request.all_headers().get("x-api-key"))))
    page.goto(server.url + "/")
    form, reason = page.locator("#key-form"), page.locator("#key-reason")
    expect(reason).to_have_text("This service needs an API key.", timeout=WAIT_MS)
    expect(page.locator("#connection")).to_have_text("API key needed")

    form.get_by_label("API key").fill("not-the-key")
    form.get_by_role("button", name="Use this key").click()
    expect(reason).to_contain_text("The API key was not accepted (401 Unauthorized).")
    expect(form).to_be_visible()

    form.get_by_label("API key").fill(API_KEY)
    form.get_by_role("button", name="Use this key").click()
    expect(form).to_be_hidden()
    expect_live(page)
    expect(card(page).locator(".name")).to_have_text("Ada Lovelace")
    assert page.evaluate("sessionStorage.getItem('userservice.apiKey')") == API_KEY
    assert (server.url + "/users", API_KEY) in sent
    assert (server.url + "/user/stream?api_key=" + API_KEY, None) in sent

    page.reload()  # asked once: the tab keeps the key
    expect(card(page).locator(".name")).to_have_text("Ada Lovelace", timeout=WAIT_MS)
    expect(form).to_be_hidden()
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#nobody")).to_be_visible(timeout=WAIT_MS)
    assert current_user(server.url, key=API_KEY) is None


def test_pages_refuse_to_be_framed(sqlite_url, serve, open_page):
    """Headers only, so once, on SQLite: another site cannot put the pages in a frame."""
    server = serve(sqlite_url)
    page = open_page(violations_expected=True)  # the refusal is reported as one
    for path in ("/", "/docs"):
        page.set_content('<iframe src="%s%s"></iframe>' % (server.url, path))  # waits for its load
        expect(page.frame_locator("iframe").locator("body[data-root]")).to_have_count(0)
