"""The embedding test app: an existing Flask site with a route of its own that mounts the
service under /pieces, as README.md shows. test_embedding.py drives it through Flask's test
client; the browser tests serve it with gunicorn (`embedded_site:create_site()`), its
settings then coming from USERSERVICE_* variables."""
from flask import Flask

import userservice

PREFIX = "/pieces"


def create_site(settings=None):
    app = Flask("mysite")

    @app.get("/")
    def home():
        return "my site"

    userservice.configure(app, settings)
    userservice.init_app(app, url_prefix=PREFIX)
    return app
