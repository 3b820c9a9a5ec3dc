"""The HTTP blueprints, and how views answer with JSON that is already encoded."""
from flask import Response


def json_text(text, status=200):
    """A response from JSON that is already encoded (stored documents are sent as they are)."""
    return Response(text, status=status, mimetype="application/json")
