"""The pages: `GET /` shows who is signed in on this device, live; `GET /docs` is the
interactive API documentation (Swagger UI from the swagger-ui-py package, served from here).

Pages are shells: HTML, CSS and JavaScript modules that hold no data and ask the API for
everything, so they load without the API key (and then ask the person for it). Every
response of this blueprint forbids inline scripts and being framed by another page, so no
site can make a person click the page's buttons unawares (clickjacking).
"""
import importlib.util
import os

from flask import Blueprint, abort, render_template, send_from_directory, url_for

bp = Blueprint("pages", __name__, static_folder="static", static_url_path="/static/userservice",
               template_folder="templates")

# What needs no API key: pages and their code, which show nothing until the API answers.
OPEN_ENDPOINTS = ("pages.page", "pages.docs", "pages.static", "pages.swagger_ui")

SWAGGER_UI_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")
# swagger-ui-py's copy of the Swagger UI distribution, found without importing its code
# (which wires Swagger UI into other frameworks): only the files are used here.
SWAGGER_UI_DIRECTORY = os.path.join(
    importlib.util.find_spec("swagger_ui").submodule_search_locations[0], "static")

POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src %s; "
          "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
OWN_IMAGES = "'self' data:"
PICTURES = "'self' data: https:"  # a user's picture is on their identity provider's host


def api_root():
    """Where the API is: "" at the root, the prefix when a site embeds the service."""
    return url_for("pages.page").rstrip("/")


@bp.get("/")
def page():
    html = render_template("userservice/page.html", root=api_root())
    return html, {"Content-Security-Policy": POLICY % PICTURES}


@bp.get("/docs")
def docs():
    return render_template("userservice/docs.html", root=api_root())


@bp.get("/static/swagger-ui/<path:filename>")
def swagger_ui(filename):
    if filename not in SWAGGER_UI_FILES:
        abort(404)
    return send_from_directory(SWAGGER_UI_DIRECTORY, filename)


@bp.after_request
def protect(response):
    response.headers.setdefault("Content-Security-Policy", POLICY % OWN_IMAGES)
    response.headers["X-Frame-Options"] = "DENY"  # for browsers that predate frame-ancestors
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
