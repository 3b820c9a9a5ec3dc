"""How an Auth0 user (or a token's claims) becomes a UserProfile: the select rules of issue 2."""
import datetime
import uuid

import pytest

from userservice import mapping, schemas

NOW = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)
EARLIER = datetime.datetime(2023, 1, 1, tzinfo=datetime.timezone.utc)
ALLOCATION = {"id": "a", "user": "u", "project": "p", "status": {"cloud": "RUNNING"},
              "urls": {"base": {"status": "RUNNING", "url": "https://b"},
                       "id": {"status": "RUNNING", "url": "https://i"}}}


def auth0(**fields):
    """An Auth0User as the schema loads it from the wire."""
    return schemas.auth0_user.load({"user_id": "auth0|123", **fields})


def test_id_is_global_id_when_given():
    profile = mapping.profile_from_auth0(auth0(user_metadata={"global_id": "g-1"}), None, NOW)
    assert profile["id"] == "g-1"


def test_id_is_a_stable_uuid_of_user_id():
    first = mapping.profile_from_auth0(auth0(), None, NOW)["id"]
    again = mapping.profile_from_auth0(auth0(), None, NOW + datetime.timedelta(days=1))["id"]
    other = mapping.profile_from_auth0(auth0(user_id="auth0|456"), None, NOW)["id"]
    assert first == again != other
    assert uuid.UUID(first).version == 5


def test_id_of_a_user_id_never_changes_across_releases():
    assert mapping.profile_id_for("auth0|123") == str(uuid.uuid5(mapping.AUTH0_NAMESPACE, "auth0|123"))
    assert str(mapping.AUTH0_NAMESPACE) == "5f0c4a52-1d0e-4c1f-9a0b-6b7e2d4f8a31"


@pytest.mark.parametrize("fields, expected", [
    ({"username": "mark", "nickname": "marky"}, "mark"),
    ({"nickname": "marky"}, "marky"),
    ({"username": "", "nickname": "marky"}, "marky"),
])
def test_username_is_username_else_nickname(fields, expected):
    assert mapping.profile_from_auth0(auth0(**fields), None, NOW)["username"] == expected


def test_username_absent_when_neither_is_given():
    assert "username" not in mapping.profile_from_auth0(auth0(), None, NOW)


def test_email_name_picture_are_copied():
    profile = mapping.profile_from_auth0(auth0(email="m@x.io", name="Mark", picture="https://p"), None, NOW)
    assert (profile["email"], profile["name"], profile["picture"]) == ("m@x.io", "Mark", "https://p")


def test_created_and_updated_come_from_auth0():
    profile = mapping.profile_from_auth0(
        auth0(created_at="2020-01-01T00:00:00Z", updated_at="2021-01-01T00:00:00Z"), None, NOW)
    assert profile["created"]["value"] == datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    assert profile["updated"]["value"] == datetime.datetime(2021, 1, 1, tzinfo=datetime.timezone.utc)


def test_created_and_updated_default_to_now():
    profile = mapping.profile_from_auth0(auth0(), None, NOW)
    assert profile["created"] == profile["updated"] == {"value": NOW}


def test_existing_user_keeps_created_when_auth0_has_none():
    existing = {"id": "x", "aesthetics": {}, "created": {"value": EARLIER}}
    assert mapping.profile_from_auth0(auth0(), existing, NOW)["created"] == {"value": EARLIER}


def test_user_metadata_becomes_auth0_and_vanityname():
    metadata = {"global_id": "g", "vanityname": "mark", "cloud_key": "c"}
    profile = mapping.profile_from_auth0(auth0(user_metadata=metadata), None, NOW)
    assert profile["auth0"] == metadata
    assert profile["vanityname"] == "mark"


def test_identities_become_providers():
    identities = [{"provider": "github", "user_id": "gh1", "access_token": "t", "expires_in": 60,
                   "connection": "github", "isSocial": True}]
    profile = mapping.profile_from_auth0(auth0(identities=identities), None, NOW)
    assert profile["providers"] == {"iterable": [{
        "type": "github", "user_id": "gh1", "access_token": "t", "expires_in": 60,
        "connection": "github", "is_social": True, "created": {"value": NOW}, "updated": {"value": NOW}}]}
    sent = schemas.user_profile.dump(profile)["providers"]["iterable"][0]
    assert sent["isSocial"] is True


def test_identities_without_user_id_or_of_other_types_are_skipped():
    identities = [{"provider": "github"}, {"provider": "myspace", "user_id": "m"}, {"user_id": "n"}]
    assert mapping.profile_from_auth0(auth0(identities=identities), None, NOW)["providers"] == {"iterable": []}


def test_known_provider_keeps_its_created():
    existing = {"id": "x", "aesthetics": {}, "providers": {"iterable": [
        {"type": "github", "user_id": "gh1", "created": {"value": EARLIER}, "updated": {"value": EARLIER}}]}}
    profile = mapping.profile_from_auth0(auth0(identities=[{"provider": "github", "user_id": "gh1"}]), existing, NOW)
    assert profile["providers"]["iterable"][0]["created"] == {"value": EARLIER}
    assert profile["providers"]["iterable"][0]["updated"] == {"value": NOW}


def test_new_user_gets_default_aesthetics():
    profile = mapping.profile_from_auth0(auth0(), None, NOW)
    assert profile["aesthetics"] == {"theme": {"dark": False}, "font": {"size": 14}}
    assert "allocation" not in profile


def test_default_aesthetics_are_not_shared_between_profiles():
    first = mapping.profile_from_auth0(auth0(), None, NOW)
    first["aesthetics"]["theme"]["dark"] = True
    assert mapping.profile_from_auth0(auth0(), None, NOW)["aesthetics"]["theme"]["dark"] is False


def test_existing_user_keeps_aesthetics_and_allocation():
    aesthetics = {"theme": {"dark": True}, "font": {"size": 20}}
    existing = {"id": "x", "aesthetics": aesthetics, "allocation": ALLOCATION}
    profile = mapping.profile_from_auth0(auth0(), existing, NOW)
    assert profile["aesthetics"] == aesthetics
    assert profile["allocation"] == ALLOCATION


def test_mapped_profile_is_a_valid_user_profile():
    profile = mapping.profile_from_auth0(auth0(
        email="m@x.io", nickname="m", user_metadata={"global_id": "g"},
        identities=[{"provider": "github", "user_id": "1", "isSocial": False}]), None, NOW)
    assert schemas.user_profile.validate(schemas.user_profile.dump(profile)) == {}


def test_claims_create_a_profile_from_sub_and_standard_claims():
    claims = {"sub": "auth0|9", "email": "c@x.io", "name": "C", "preferred_username": "cee", "picture": 5}
    profile = mapping.profile_from_claims(claims, None, NOW)
    assert profile["id"] == mapping.profile_id_for("auth0|9")
    assert (profile["email"], profile["name"], profile["username"]) == ("c@x.io", "C", "cee")
    assert "picture" not in profile  # a non-string claim is ignored
    assert profile["aesthetics"] == mapping.DEFAULT_AESTHETICS


def test_claims_refresh_an_existing_profile_keeping_the_rest():
    existing = {"id": "x", "aesthetics": {"theme": {"dark": True}, "font": {"size": 9}},
                "created": {"value": EARLIER}, "allocation": ALLOCATION, "vanityname": "v"}
    profile = mapping.profile_from_claims({"sub": "s", "email": "new@x.io"}, existing, NOW)
    assert profile == {**existing, "email": "new@x.io", "updated": {"value": NOW}}
