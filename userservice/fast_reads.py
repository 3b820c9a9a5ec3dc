"""The hot reads, GET /user and GET /users/{user}, answered in front of Flask.

Flask's request context, routing and hooks cost more than the read itself: on the ordinary
request the read cache answers from memory. Here the same guard functions Flask's path calls
(guards.py: Host, API key, no body) and the same request id, version header and metrics are
applied, and the answer is the cache's encoded body for the present commit marker (never
stale after an acknowledged write, see read_cache.py). Anything else goes to Flask: another
method or path, a query string, an Origin header (CORS answers), a body, a refusal, the
access log, an id or a document not cached yet (Flask then reads it, and says 404 when
there is none), an error reaching the database.
"""
import re
import time

from werkzeug.wsgi import get_content_length, get_host

from . import extension, guards, logs
from .api.users import UserIdConverter
from .api.wellknown import VERSION_HEADER
from .problems import Problem
from .read_cache import CURRENT
from .version import VERSION

USER_PATH = "/user"
USERS_PREFIX = "/users/"
USER_ID = re.compile(UserIdConverter.regex)
CONTENT_TYPE = ("Content-Type", "application/json")


class FastReads:
    """WSGI middleware of one app: its hot reads, else `flask` (the app's own wsgi_app)."""

    def __init__(self, app, flask):
        self.config = app.config
        self.flask = flask
        self.service = app.extensions[extension.EXTENSION]
        routes = {rule.endpoint: rule.rule for rule in app.url_map.iter_rules()}
        self.current_route, self.user_route = routes["user.snapshot"], routes["users.specific_user"]

    def __call__(self, environ, start_response):
        answered = self.answer(environ, start_response)
        return self.flask(environ, start_response) if answered is None else answered

    def answer(self, environ, start_response):
        """The response iterable, or None when Flask is to answer."""
        started = time.perf_counter()
        if (environ["REQUEST_METHOD"] != "GET" or environ.get("QUERY_STRING") or "HTTP_ORIGIN" in environ
                or environ.get("SCRIPT_NAME") or self.config["ACCESS_LOG"]):
            return None
        requested = self.requested(environ.get("PATH_INFO", ""))
        if requested is None:
            return None
        route, key = requested
        if guards.announces_body(get_content_length(environ), environ.get("HTTP_TRANSFER_ENCODING", "")):
            return None
        try:
            guards.check_host("HTTP_HOST" in environ, environ.get("SERVER_PROTOCOL"), get_host(environ),
                              guards.setting("ALLOWED_HOSTS", self.config))
            guards.check_api_key(self.config["API_KEY"], environ.get("HTTP_X_API_KEY"))
        except Problem:  # Flask answers it, as problem+json
            return None
        try:
            body = self.service.read_cache.cached_answer(key)
        except Exception:  # the database out of reach (PostgreSQL's marker): Flask answers 503
            return None
        if body is None:
            return None
        start_response("200 OK", [
            CONTENT_TYPE, ("Content-Length", str(len(body))), (VERSION_HEADER, VERSION),
            (logs.REQUEST_ID_HEADER, logs.request_id(environ.get("HTTP_X_REQUEST_ID", "")))])
        self.service.metrics.request_done(route, "GET", 200, time.perf_counter() - started)
        return [body]

    def requested(self, path):
        """(route, read cache key) of /user or /users/{id} (ASCII only: Werkzeug decodes the
        rest), else None."""
        if path == USER_PATH:
            return self.current_route, CURRENT
        if path.startswith(USERS_PREFIX) and path.isascii():
            user_id = path[len(USERS_PREFIX):]
            if USER_ID.fullmatch(user_id):
                return self.user_route, user_id
        return None


def init_app(app):
    """Put the fast path in front of the app's Flask (a whole app of its own: an embedding
    site keeps its own WSGI stack, and its mounts go through Flask)."""
    app.wsgi_app = FastReads(app, app.wsgi_app)
