"""userservice.pages through Flask's test client, on both backends: the headers every page
and asset is sent with (CSP without inline scripts, no framing), HTML with no inline script or
style that names no other host, the routes open without the API key, and the guards."""
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from userservice import guards, pages

API_KEY = "pages-key-9be2"
PAGES = ["/", "/docs"]
STATIC = Path(pages.__file__).parent / "static"
EVIL = "http://evil.example"


class Links(HTMLParser):
    """What an HTML page loads or links to, and whatever it carries inline."""

    def __init__(self):
        super().__init__()
        self.links, self.inline, self.open_script = [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [attrs[name] for name in ("src", "href") if name in attrs]
        self.inline += ["%s %s=" % (tag, name) for name in attrs if name.startswith("on") or name == "style"]
        if tag == "style" or (tag == "script" and "src" not in attrs):
            self.inline.append("<%s>" % tag)
        self.open_script = tag == "script"

    def handle_endtag(self, tag):
        self.open_script = False

    def handle_data(self, data):
        if self.open_script and data.strip():
            self.inline.append("script text")


def parsed(client, path):
    response = client.get(path)
    assert response.status_code == 200 and response.mimetype == "text/html"
    links = Links()
    links.feed(response.get_data(as_text=True))
    return links


def imports(client, path):
    """The modules a JavaScript module imports, as paths."""
    text = client.get(path).get_data(as_text=True)
    return [path.rsplit("/", 1)[0] + "/" + name for name in re.findall(r'from "\./([\w.-]+)"', text)]


def assets(client):
    """Everything the pages load: their scripts, styles, and the modules those import."""
    found = {link for page in PAGES for link in parsed(client, page).links
             if link.startswith("/static/")}
    for module in [link for link in found if link.endswith(".js")]:
        found.update(imports(client, module))
    return sorted(found)


def policy(response):
    directives = (part.strip().split(None, 1) for part in response.headers["Content-Security-Policy"].split(";"))
    return {name: value for name, value in directives}


def test_pages_load_their_assets_from_this_service(client):
    found = assets(client)
    assert {"/static/userservice/page.js", "/static/userservice/client.js", "/static/userservice/render.js",
            "/static/userservice/docs.js", "/static/swagger-ui/swagger-ui-bundle.js"} <= set(found)
    for path in found:
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.mimetype in ("text/javascript", "text/css"), path


@pytest.mark.parametrize("page", PAGES)
def test_page_html_has_no_inline_script_or_style_and_names_no_other_host(client, page):
    links = parsed(client, page)
    assert links.inline == []
    assert all(link.startswith("/") and not link.startswith("//") or link == "data:," for link in links.links)


def test_own_scripts_and_styles_name_no_other_host():
    for path in STATIC.iterdir():
        assert not re.search(r"\b(https?:)?//[\w.-]+\.\w", path.read_text()), path.name


def test_every_page_and_asset_forbids_inline_scripts_and_framing(client):
    for path in PAGES + assets(client):
        response = client.get(path)
        directives = policy(response)
        assert directives["default-src"] == "'none'" and directives["script-src"] == "'self'", path
        assert directives["frame-ancestors"] == "'none'", path
        assert "unsafe" not in response.headers["Content-Security-Policy"], path
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_only_the_live_page_may_show_pictures_from_other_hosts(client):
    assert policy(client.get("/"))["img-src"] == "'self' data: https:"
    assert policy(client.get("/docs"))["img-src"] == "'self' data:"


def test_page_is_told_where_the_api_is(client):
    assert 'data-root=""' in client.get("/").get_data(as_text=True)


@pytest.mark.parametrize("name", ["index.html", "swagger-initializer.js", "../core.py", "%2e%2e/core.py"])
def test_only_swagger_ui_files_in_use_are_served(client, name):
    response = client.get("/static/swagger-ui/" + name)
    assert response.status_code == 404 and response.mimetype == "application/problem+json"


def test_no_route_serves_files_past_the_guards(app):
    """Flask's app-wide static route would skip them: every file comes from the pages blueprint."""
    assert not [rule.rule for rule in app.url_map.iter_rules() if rule.endpoint == "static"]


@pytest.mark.parametrize("path", PAGES + ["/static/userservice/page.js", "/static/swagger-ui/swagger-ui.css"])
@pytest.mark.parametrize("headers", [{"Host": "evil.example"}, {"Origin": EVIL}], ids=["host", "origin"])
def test_pages_are_guarded_by_host_and_origin(client, path, headers):
    response = client.get(path, headers=headers)
    assert response.status_code == 403 and response.mimetype == "application/problem+json"


SAMPLE_ARGUMENTS = {"user": "someone", "filename": {"pages.static": "page.js", "pages.swagger_ui": "swagger-ui.css"}}


def sample_url(rule):
    values = {name: SAMPLE_ARGUMENTS[name] for name in rule.arguments}
    if isinstance(values.get("filename"), dict):
        values["filename"] = values["filename"][rule.endpoint]
    return rule.build(values)[1]


@pytest.fixture
def keyed_client(app_config, request):
    app_config["API_KEY"] = API_KEY
    return request.getfixturevalue("app").test_client()


def test_with_an_api_key_only_health_readiness_and_the_pages_open_without_it(keyed_client):
    """Over every route: the pages hold no data (they ask the API, with the key), health is
    what the SDKs probe, readiness what an orchestrator probes; everything else answers 401
    without the key."""
    opened = set()
    for rule in keyed_client.application.url_map.iter_rules():
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            response = keyed_client.open(sample_url(rule), method=method)
            if response.status_code != 401:
                opened.add(rule.endpoint)
            response.close()
    assert opened == set(guards.OPEN_ENDPOINTS)
    assert {"pages.page", "pages.docs", "pages.static", "pages.swagger_ui", "wellknown.health",
            "wellknown.ready"} == opened
