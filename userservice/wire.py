"""The wire conventions every schema follows: strings and lists of bounded length, strict
integers and booleans, unknown keys ignored, explicit nulls taken as 'not set'."""
import functools

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate

MAX_STRING = 16 * 1024
MAX_ITEMS = 256

Str = functools.partial(fields.String, validate=validate.Length(max=MAX_STRING))
Int = functools.partial(fields.Integer, strict=True)


class StrictBoolean(fields.Boolean):
    """JSON true or false only: 1, 0 and "true" are errors, as in the 5.x SDK's strict mode."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


Bool = StrictBoolean
DateTime = fields.DateTime


def Nested(schema, **kwargs):
    return fields.Nested(schema, **kwargs)


def List(field, **kwargs):
    return fields.List(field, validate=validate.Length(max=MAX_ITEMS), **kwargs)


def optional(field_factory, *args, **kwargs):
    return field_factory(*args, allow_none=True, **kwargs)


class WireSchema(Schema):
    """Unknown keys are ignored; explicit nulls mean 'not set' and are left out."""

    class Meta:
        unknown = EXCLUDE

    @post_load
    def drop_nulls(self, data, **kwargs):
        return {key: value for key, value in data.items() if value is not None}


class FullMatch(validate.Regexp):
    """A pattern the whole value must match (`$` alone lets a trailing newline through);
    still a Regexp, so the OpenAPI document states it as the field's `pattern`."""

    def __call__(self, value):
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value
