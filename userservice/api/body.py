"""Reading a request's JSON body: parse it, refuse what is hostile whatever the schema says
(too deep, over-long strings, characters no database column can hold), then load it through
a Marshmallow schema."""
import json

from flask import current_app, g, request

from ..problems import NotJson, Problem


def hostile_json(value, max_depth, max_string):
    """What makes parsed JSON unacceptable whatever the schema says, as (where, why), or None.

    Walks level by level, without recursion. NUL and unpaired surrogates are refused
    because neither database can store them in a text column.
    """
    level = [("body", value)]
    for depth in range(max_depth + 2):
        if not level:
            return None
        if depth > max_depth:
            return level[0][0], "nests deeper than %d levels" % max_depth
        children = []
        for where, item in level:
            for text in strings_of(item):
                reason = hostile_string(text, max_string)
                if reason:
                    return where, reason
            children.extend(("%s.%s" % (where, key) if depth else str(key), child)
                            for key, child in members_of(item))
        level = children
    return None


def strings_of(item):
    """The strings a JSON value holds itself: the value, or an object's keys."""
    if isinstance(item, str):
        return (item,)
    return item.keys() if isinstance(item, dict) else ()


def members_of(item):
    if isinstance(item, dict):
        return item.items()
    return enumerate(item) if isinstance(item, list) else ()


def hostile_string(text, max_length):
    if len(text) > max_length:
        return "longer than %d characters" % max_length
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired surrogate"
    return None


def number(text):
    """A JSON number: 21.0 is the integer 21, as JSON Schema (and so the OpenAPI document) says."""
    value = float(text)
    return int(value) if value.is_integer() else value


def json_body(schema):
    """The request body loaded through a Marshmallow schema, or a problem naming what is wrong."""
    raw = request.get_data(cache=False)  # already read, within its limits, by the guard
    if not raw.strip():
        raise Problem(400, "A JSON request body is required.")
    if not request.is_json:
        raise NotJson()
    try:
        data = json.loads(raw, parse_float=number)
    except (ValueError, RecursionError) as error:
        detail = "too deeply nested" if isinstance(error, RecursionError) else error
        raise Problem(400, "The request body is not valid JSON: %s" % detail) from None
    config = current_app.config
    hostile = hostile_json(data, config["MAX_JSON_DEPTH"], config["MAX_JSON_STRING"])
    if hostile:
        where, reason = hostile
        where = where[:128]
        raise Problem(400, "Invalid request body: %s: %s." % (where, reason),
                      invalid_params=[{"name": where, "reason": reason}])
    if not isinstance(data, dict):
        raise Problem(400, "The request body must be a JSON object.")
    g.json_body = data  # so that a failure log can blank out the secrets it holds
    return schema.load(data)
