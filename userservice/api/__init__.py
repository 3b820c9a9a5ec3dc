"""The HTTP blueprints, and what every view shares: reading a JSON body, answering JSON."""
import json

from flask import Response, current_app, request

from ..errors import Problem


def json_depth(value):
    """Nesting depth of parsed JSON, without recursion."""
    depth, level = 0, [value]
    while level:
        depth += 1
        level = [child for item in level if isinstance(item, (dict, list))
                 for child in (item.values() if isinstance(item, dict) else item)]
    return depth - 1


def json_body(schema):
    """The request body loaded through a Marshmallow schema, or a problem naming what is wrong."""
    raw = request.get_data(cache=False)  # over MAX_CONTENT_LENGTH this raises 413
    if not raw.strip():
        raise Problem(400, "A JSON request body is required.")
    if not request.is_json:
        raise Problem(415, "The request body must be sent as Content-Type: application/json.")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise Problem(400, "The request body is not valid JSON: %s" % error) from None
    if json_depth(data) > current_app.config["MAX_JSON_DEPTH"]:
        raise Problem(400, "The request body nests deeper than %d levels." % current_app.config["MAX_JSON_DEPTH"])
    if not isinstance(data, dict):
        raise Problem(400, "The request body must be a JSON object.")
    return schema.load(data)


def json_text(text, status=200):
    """A response from JSON that is already encoded (stored documents are sent as they are)."""
    return Response(text, status=status, mimetype="application/json")
