"""The published Python SDK (pieces-os-client 4.0.4) against a real `userservice serve`
(gunicorn, 2 workers) on SQLite and on PostgreSQL: every User and Users endpoint but the
stream, success and error paths, and a full profile round-tripping through update."""
import datetime
import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pieces_os_client.api.allocations_api import AllocationsApi
from pieces_os_client.api.os_api import OSApi
from pieces_os_client.api.user_api import UserApi
from pieces_os_client.api.users_api import UsersApi
from pieces_os_client.api.well_known_api import WellKnownApi
from pieces_os_client.api_client import ApiClient
from pieces_os_client.configuration import Configuration
from pieces_os_client.models.aesthetics import Aesthetics
from pieces_os_client.models.allocation_cloud import AllocationCloud
from pieces_os_client.models.allocation_cloud_status import AllocationCloudStatus
from pieces_os_client.models.allocation_cloud_url import AllocationCloudUrl
from pieces_os_client.models.allocation_cloud_urls import AllocationCloudUrls
from pieces_os_client.models.allocation_status_enum import AllocationStatusEnum
from pieces_os_client.models.anonymous_temporal_range import AnonymousTemporalRange
from pieces_os_client.models.auth0_identity import Auth0Identity
from pieces_os_client.models.auth0_open_ai_user_metadata import Auth0OpenAIUserMetadata
from pieces_os_client.models.auth0_user import Auth0User
from pieces_os_client.models.auth0_user_allocation_metadata import Auth0UserAllocationMetadata
from pieces_os_client.models.auth0_user_beta_status import Auth0UserBetaStatus
from pieces_os_client.models.auth0_user_metadata import Auth0UserMetadata
from pieces_os_client.models.embedded_model_schema import EmbeddedModelSchema
from pieces_os_client.models.embedded_model_schema_semantic_version_enum import EmbeddedModelSchemaSemanticVersionEnum
from pieces_os_client.models.external_provider import ExternalProvider
from pieces_os_client.models.external_provider_profile_data import ExternalProviderProfileData
from pieces_os_client.models.external_provider_type_enum import ExternalProviderTypeEnum
from pieces_os_client.models.external_providers import ExternalProviders
from pieces_os_client.models.font import Font
from pieces_os_client.models.grouped_timestamp import GroupedTimestamp
from pieces_os_client.models.o_auth_token import OAuthToken
from pieces_os_client.models.theme import Theme
from pieces_os_client.models.user_beta_status import UserBetaStatus
from pieces_os_client.exceptions import ApiException
from pieces_os_client.models.user_profile import UserProfile

from userservice.config import DEFAULTS

UTC = datetime.timezone.utc
ISSUER, AUDIENCE = "https://issuer.example/", "pieces"


class Sdk:
    """The SDK's three API classes, bound to one running server."""

    def __init__(self, url):
        self.client = ApiClient(Configuration(host=url))
        self.user, self.users, self.well_known = UserApi(self.client), UsersApi(self.client), WellKnownApi(self.client)
        self.os, self.allocations = OSApi(self.client), AllocationsApi(self.client)

    def close(self):
        """Hang up idle keep-alive connections, which the server's graceful shutdown waits for."""
        self.client.rest_client.pool_manager.clear()


@pytest.fixture
def sdk(serve, database_url):
    client = Sdk(serve(database_url).url)
    yield client
    client.close()


def schema():
    return EmbeddedModelSchema(migration=0, semantic=EmbeddedModelSchemaSemanticVersionEnum.MAJOR_0_MINOR_0_PATCH_1)


def stamp(*args, tz=UTC):
    return GroupedTimestamp(var_schema=schema(), value=datetime.datetime(*args, tzinfo=tz), readable="then")


def url(address):
    return AllocationCloudUrl(var_schema=schema(), status=AllocationStatusEnum.RUNNING, url=address)


def full_profile(user_id, created):
    """A UserProfile with every nested model of the reference populated."""
    return UserProfile(
        var_schema=schema(), picture="https://example.com/me.png", email="full@example.com",
        created=created, updated=stamp(2024, 2, 1, 8, 30, 15, 123456),
        username="fulluser", id=user_id, name="Full User", vanityname="fullvanity",
        aesthetics=Aesthetics(var_schema=schema(), theme=Theme(var_schema=schema(), dark=True),
                              font=Font(var_schema=schema(), size=17)),
        allocation=AllocationCloud(
            var_schema=schema(), id="alloc-9", user=user_id, project="proj", region="us-east1", version="1.2.3",
            updated=stamp(2024, 1, 5, tz=None),  # a naive timestamp must come back naive
            urls=AllocationCloudUrls(var_schema=schema(), base=url("https://base.pieces.cloud"),
                                     id=url("https://alloc-9.pieces.cloud"), vanity=url("https://fullvanity.pieces.cloud")),
            status=AllocationCloudStatus(var_schema=schema(), cloud=AllocationStatusEnum.SUCCEEDED)),
        providers=ExternalProviders(var_schema=schema(), iterable=[ExternalProvider(
            var_schema=schema(), type=ExternalProviderTypeEnum.GITHUB, user_id="gh-9", access_token="gho_x",
            expires_in=3600, created=stamp(2023, 5, 1), updated=stamp(2023, 6, 1), connection="github", is_social=True,
            profile_data=ExternalProviderProfileData(
                name="Full", picture="https://p", nickname="full", email="full@example.com", email_verified=True,
                node_id="n", gravatar_id="g", url="https://api.github.com/users/full", html_url="https://github.com/full",
                followers_url="f", following_url="f", gists_url="g", starred_url="s", subscriptions_url="s",
                organizations_url="o", repos_url="r", events_url="e", received_events_url="r", type="User",
                site_admin=False, company="Pieces", blog="https://blog", anchor="a", hireable=True, bio="bio",
                twitter_username="full", public_repos=3, public_gists=1, followers=10, following=2,
                created_at="2011-01-25T18:44:36Z", updated_at="2024-01-01T00:00:00Z", private_gists=0,
                total_private_repos=4, owned_private_repos=4, disk_usage=1000, collaborators=1,
                two_factor_authentication=True))]),
        auth0=Auth0UserMetadata(
            var_schema=schema(), global_id=user_id, cloud_key="ck", stripe_customer_id="cus_1", vanityname="fullvanity",
            allocation=Auth0UserAllocationMetadata(project="proj", region="us-east1"),
            open_ai=Auth0OpenAIUserMetadata(var_schema=schema(), api_key="sk-1", api_key_name="main",
                                            organization_key="org-1"),
            beta=AnonymousTemporalRange(var_schema=schema(), var_from=stamp(2024, 1, 1), to=stamp(2024, 12, 31),
                                        between=True, continuous=False)),
    )


def status_of(call, *args):
    with pytest.raises(ApiException) as error:
        call(*args)
    return error.value.status


def select(sdk, user_id="auth0|sdk", **fields):
    return sdk.user.select_user(Auth0User(user_id=user_id, **fields))


def test_sdk_well_known_health_and_version(sdk):
    assert sdk.well_known.get_well_known_health() == "ok"
    assert sdk.well_known.get_well_known_version() == DEFAULTS["PIECES_OS_VERSION"]


def test_sdk_select_snapshot_refresh_clear(sdk):
    assert sdk.user.user_snapshot().user is None
    identity = Auth0Identity(provider="github", user_id="gh-1", connection="github", is_social=True)
    profile = select(sdk, nickname="sdkuser", email="sdk@example.com", identities=[identity],
                     created_at=datetime.datetime(2020, 1, 1, tzinfo=UTC))
    assert (profile.username, profile.email, profile.aesthetics.font.size) == ("sdkuser", "sdk@example.com", 14)
    assert profile.created.value == datetime.datetime(2020, 1, 1, tzinfo=UTC)
    assert profile.providers.iterable[0].is_social is True
    assert sdk.user.user_snapshot().user == profile
    assert sdk.user.refresh_user() == profile
    assert sdk.user.user_providers().user == profile
    assert sdk.user.clear_user() is None
    assert sdk.user.user_snapshot().user is None
    assert sdk.user.user_providers().user is None
    assert status_of(sdk.user.refresh_user) == 511


def test_sdk_full_profile_round_trips_through_update(sdk):
    selected = select(sdk)
    sent = full_profile(selected.id, selected.created)
    before = datetime.datetime.now(UTC)
    stored = sdk.user.update_user(sent)
    assert stored.updated.value >= before
    assert stored.copy(update={"updated": None}) == sent.copy(update={"updated": None})
    assert sdk.users.users_specific_user_snapshot(selected.id) == stored
    assert sdk.user.user_snapshot().user == stored


def test_sdk_update_errors(sdk):
    first = select(sdk, "auth0|1", nickname="first")
    second = select(sdk, "auth0|2")
    ghost = UserProfile(id="ghost", aesthetics=first.aesthetics)
    assert status_of(sdk.user.update_user, ghost) == 404
    assert status_of(sdk.user.update_user, second.copy(update={"username": "FIRST"})) == 409
    assert sdk.users.users_snapshot().iterable == [first, second]


def test_sdk_beta_status(sdk):
    profile = select(sdk)
    vision = AnonymousTemporalRange(var_from=stamp(2024, 1, 1), continuous=True)
    status = UserBetaStatus(user=profile.id, auth0=Auth0UserBetaStatus(vision=vision))
    assert sdk.user.user_beta_status(status) == status
    assert sdk.user.user_snapshot().user.auth0.beta == vision
    backwards = AnonymousTemporalRange(var_from=stamp(2025, 1, 1), to=stamp(2024, 1, 1))
    assert status_of(sdk.user.user_beta_status, UserBetaStatus(user=profile.id, auth0=Auth0UserBetaStatus(
        vision=backwards))) == 400
    assert status_of(sdk.user.user_beta_status, UserBetaStatus(user="someone-else")) == 511


def test_sdk_vanity(sdk):
    other = select(sdk, "auth0|other")
    sdk.user.update_user(other.copy(update={"vanityname": "taken"}))
    profile = select(sdk, "auth0|me")
    assert status_of(sdk.user.user_update_vanity, profile.copy(update={"vanityname": "mine"})) == 404
    allocation = full_profile(profile.id, profile.created).allocation.copy(update={"urls": AllocationCloudUrls(
        base=url("https://base"), id=url("https://id"))})
    profile = sdk.user.update_user(profile.copy(update={"allocation": allocation}))
    updated = sdk.user.user_update_vanity(profile.copy(update={"vanityname": "Mine"}))
    assert updated.vanityname == "mine"
    assert updated.allocation.urls.vanity == AllocationCloudUrl(status=AllocationStatusEnum.SUCCEEDED,
                                                                url="https://mine.pieces.cloud")
    assert status_of(sdk.user.user_update_vanity, profile.copy(update={"vanityname": "TAKEN"})) == 409
    assert status_of(sdk.user.user_update_vanity, profile.copy(update={"vanityname": "no_way"})) == 400
    assert status_of(sdk.user.user_update_vanity, other.copy(update={"vanityname": "other"})) == 511
    sdk.user.clear_user()
    assert status_of(sdk.user.user_update_vanity, updated) == 511


def test_sdk_users_snapshot_specific_and_disconnect(sdk):
    assert sdk.users.users_snapshot().iterable == []
    first, second = select(sdk, "auth0|1"), select(sdk, "auth0|2")
    assert sdk.users.users_snapshot().iterable == [first, second]
    assert sdk.users.users_specific_user_snapshot(first.id) == first
    assert status_of(sdk.users.users_specific_user_snapshot, "ghost") == 404
    assert sdk.users.users_disconnect_user(second.id).iterable == [first]
    assert sdk.user.user_snapshot().user is None
    assert status_of(sdk.users.users_disconnect_user, second.id) == 404


def test_sdk_token_sign_in_not_configured_is_501(sdk):
    token = OAuthToken(access_token="a", token_type="Bearer", expires_in=60, scope="openid", id_token="x.y.z")
    assert status_of(sdk.users.authenticate_from_oauth_token, token) == 501


def test_sdk_token_sign_in_verifies_the_id_token(serve, database_url, tmp_path, request):
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "ES256"}]}))
    sdk = Sdk(serve(database_url, extra_env={
        "USERSERVICE_OIDC_JWKS": str(tmp_path / "jwks.json"), "USERSERVICE_OIDC_ISSUER": ISSUER,
        "USERSERVICE_OIDC_AUDIENCE": AUDIENCE}).url)
    request.addfinalizer(sdk.close)
    now = datetime.datetime.now(UTC)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "auth0|tok", "exp": now + datetime.timedelta(minutes=5),
              "email": "tok@example.com"}

    def token(**overrides):
        id_token = jwt.encode({**claims, **overrides}, key, algorithm="ES256", headers={"kid": "k1"})
        return OAuthToken(access_token="a", token_type="Bearer", expires_in=60, scope="openid", id_token=id_token)

    profile = sdk.users.authenticate_from_oauth_token(token())
    assert profile.email == "tok@example.com"
    assert sdk.users.users_snapshot().iterable == [profile]
    assert sdk.user.user_snapshot().user is None
    assert status_of(sdk.users.authenticate_from_oauth_token, token(aud="other")) == 401
    assert status_of(sdk.users.authenticate_from_oauth_token, token().copy(update={"id_token": None})) == 400


def test_sdk_os_sign_out_sign_in_and_allocations_connect(sdk):
    assert status_of(sdk.os.sign_into_os) == 511
    assert status_of(sdk.allocations.allocations_connect_new_cloud) == 511
    profile = select(sdk, nickname="osuser", email="os@example.com")
    cloud = sdk.allocations.allocations_connect_new_cloud(profile)
    assert (cloud.user, cloud.status.cloud) == (profile.id, AllocationStatusEnum.FAILED)
    assert sdk.os.sign_out_of_os().iterable == [profile]
    assert sdk.user.user_snapshot().user is None
    assert sdk.os.sign_into_os() == profile
    assert sdk.user.user_snapshot().user == profile
    assert sdk.os.sign_into_os() == profile
