"""What a request can fail with, as HTTP problems (RFC 9457): raised anywhere, and turned
into application/problem+json by the one error handler (errors.py)."""
from werkzeug.exceptions import HTTPException


class Problem(HTTPException):
    """An HTTP error with a detail for the client and, optionally, the offending fields."""

    def __init__(self, status, detail, invalid_params=None, headers=None):
        self.code = status
        super().__init__(description=detail)
        self.invalid_params = invalid_params
        self.extra_headers = headers or {}


class SignInRequired(Problem):
    def __init__(self, detail="Sign in first: no user is signed in on this device."):
        super().__init__(511, detail)


class UnknownUser(Problem):
    def __init__(self, user_id):
        super().__init__(404, "No user with id %r on this device." % user_id)


class NotJson(Problem):
    """Forms and text/plain are what any web page can send without asking: refused."""

    def __init__(self):
        super().__init__(415, "The request body must be sent as Content-Type: application/json.")


class ServiceUnavailable(Problem):
    """Not now (the database is out of reach, the stream is full or shutting down): retry."""

    def __init__(self, detail, retry_after):
        super().__init__(503, detail, headers={"Retry-After": str(retry_after)})
