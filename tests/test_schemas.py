"""The wire format: names, optional fields, unknown keys, strict types and narrowed enums."""
import datetime
import json

import pytest
from marshmallow import ValidationError

from userservice import schemas

AESTHETICS = {"theme": {"dark": True}, "font": {"size": 12}}
WHEN = "2024-03-01T10:00:00+00:00"


def minimal_profile(**extra):
    return {"id": "u1", "aesthetics": AESTHETICS, **extra}


def round_trip(profile):
    return json.loads(schemas.encode_profile(schemas.user_profile.load(profile)))


def provider(kind="github", **extra):
    return {"type": kind, "user_id": "p1", "created": {"value": WHEN}, "updated": {"value": WHEN}, **extra}


def test_profile_wire_names_are_kept():
    profile = minimal_profile(
        schema={"migration": 0, "semantic": "MAJOR_0_MINOR_0_PATCH_1"},
        providers={"iterable": [provider(isSocial=True, profileData={"name": "N", "public_repos": 3})]},
        auth0={"global_id": "u1", "open_AI": {"api_key": "k"},
               "beta": {"from": {"value": WHEN}, "continuous": True}},
    )
    assert round_trip(profile) == profile


def test_profile_unset_optionals_are_left_out_not_null():
    assert round_trip(minimal_profile()) == minimal_profile()


def test_profile_explicit_nulls_are_treated_as_unset():
    assert round_trip(minimal_profile(email=None, allocation=None, created=None)) == minimal_profile()


def test_profile_unknown_keys_are_accepted_and_dropped():
    profile = minimal_profile(apiKeys={"x": 1}, descope={"a": "b"},
                              aesthetics={**AESTHETICS, "newer": True})
    assert round_trip(profile) == minimal_profile()


@pytest.mark.parametrize("field, value", [
    ("aesthetics", {"theme": {"dark": "true"}, "font": {"size": 12}}),
    ("aesthetics", {"theme": {"dark": 1}, "font": {"size": 12}}),
    ("aesthetics", {"theme": {"dark": True}, "font": {"size": "12"}}),
    ("aesthetics", {"theme": {"dark": True}, "font": {"size": 12.5}}),
    ("aesthetics", {"theme": {"dark": True}, "font": {"size": True}}),
    ("aesthetics", {"theme": {"dark": 0}, "font": {"size": 12}}),
    ("email", 5),
    ("id", 7),
    ("created", {"value": "yesterday"}),
])
def test_profile_types_are_strict(field, value):
    with pytest.raises(ValidationError) as error:
        schemas.user_profile.load(minimal_profile(**{field: value}))
    assert field in error.value.messages


@pytest.mark.parametrize("missing", ["id", "aesthetics"])
def test_profile_required_fields_are_required(missing):
    profile = minimal_profile()
    del profile[missing]
    with pytest.raises(ValidationError) as error:
        schemas.user_profile.load(profile)
    assert missing in error.value.messages


def test_profile_providers_of_types_one_sdk_rejects_are_left_out():
    profile = minimal_profile(providers={"iterable": [provider("auth0"), provider("discord"), provider("github")]})
    assert [p["type"] for p in round_trip(profile)["providers"]["iterable"]] == ["github"]


def test_provider_unknown_type_is_rejected():
    with pytest.raises(ValidationError):
        schemas.user_profile.load(minimal_profile(providers={"iterable": [provider("myspace")]}))


def test_allocation_disconnected_is_sent_as_unknown():
    url = {"status": "DISCONNECTED", "url": "https://x"}
    allocation = {"id": "a", "user": "u1", "project": "p", "urls": {"base": url, "id": url},
                  "status": {"cloud": "DISCONNECTED"}}
    sent = round_trip(minimal_profile(allocation=allocation))["allocation"]
    assert sent["status"]["cloud"] == "UNKNOWN"
    assert sent["urls"]["base"]["status"] == sent["urls"]["id"]["status"] == "UNKNOWN"


def test_schema_version_unknown_is_sent_as_the_known_version():
    sent = round_trip(minimal_profile(schema={"migration": 1, "semantic": "UNKNOWN"}))
    assert sent["schema"] == {"migration": 1, "semantic": "MAJOR_0_MINOR_0_PATCH_1"}


def test_datetime_keeps_its_offset_or_its_naivety():
    profile = minimal_profile(created={"value": "2024-03-01T10:00:00.123456"},
                              updated={"value": "2024-03-01T12:00:00+02:00"})
    sent = round_trip(profile)
    assert sent["created"]["value"] == "2024-03-01T10:00:00.123456"
    assert sent["updated"]["value"] == "2024-03-01T12:00:00+02:00"


def test_range_from_after_to_is_rejected_naming_from():
    with pytest.raises(ValidationError) as error:
        schemas.user_beta_status.load({"user": "u1", "auth0": {"vision": {
            "from": {"value": "2024-03-02T00:00:00Z"}, "to": {"value": "2024-03-01T00:00:00"}}}})
    assert "from" in error.value.messages["auth0"]["vision"]


def test_range_from_before_to_mixing_naive_and_aware_is_accepted():
    loaded = schemas.user_beta_status.load({"user": "u1", "auth0": {"vision": {
        "from": {"value": "2024-03-01T00:00:00"}, "to": {"value": "2024-03-02T00:00:00Z"}}}})
    assert loaded["auth0"]["vision"]["from_"]["value"] == datetime.datetime(2024, 3, 1)


@pytest.mark.parametrize("body", [{}, {"name": "x"}, {"user_metadata": {"global_id": ""}}])
def test_auth0_user_without_identity_is_rejected_naming_user_id(body):
    with pytest.raises(ValidationError) as error:
        schemas.auth0_user.load(body)
    assert "user_id" in error.value.messages


@pytest.mark.parametrize("body", [{"user_id": "auth0|1"}, {"user_metadata": {"global_id": "g"}}])
def test_auth0_user_with_user_id_or_global_id_is_accepted(body):
    assert schemas.auth0_user.load(body)


def test_auth0_identity_is_social_wire_name():
    loaded = schemas.auth0_user.load({"user_id": "a", "identities": [{"provider": "github", "isSocial": True}]})
    assert loaded["identities"] == [{"provider": "github", "is_social": True}]


@pytest.mark.parametrize("token, field", [
    ({"access_token": "a", "token_type": "Bearer"}, "expires_in"),
    ({"access_token": "a", "token_type": "bearer", "expires_in": 1}, "token_type"),
    ({"access_token": "a", "token_type": "Bearer", "expires_in": "1"}, "expires_in"),
    ({"token_type": "Bearer", "expires_in": 1}, "access_token"),
])
def test_oauth_token_invalid_names_the_field(token, field):
    with pytest.raises(ValidationError) as error:
        schemas.oauth_token.load(token)
    assert field in error.value.messages


def test_oauth_token_scope_is_optional():
    assert schemas.oauth_token.load({"access_token": "a", "token_type": "Bearer", "expires_in": 1})


def test_vanity_request_requires_vanityname_but_not_aesthetics():
    assert schemas.vanity_request.load({"id": "u1", "vanityname": "mark"})
    with pytest.raises(ValidationError) as error:
        schemas.vanity_request.load({"id": "u1"})
    assert "vanityname" in error.value.messages


def test_decode_profile_inverts_encode_profile():
    profile = schemas.user_profile.load(minimal_profile(created={"value": WHEN}))
    assert schemas.decode_profile(schemas.encode_profile(profile)) == profile
