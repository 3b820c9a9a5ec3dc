"""/allocations/connect, on both backends: what `pieces login` asks for a signed-in user whose
profile has no cloud allocation, answered within the documented contract (200 AllocationCloud)."""
import pytest
from pieces_os_client.models.allocation_cloud import AllocationCloud
from pieces_os_client.models.allocation_status_enum import AllocationStatusEnum

from conftest import dump_database

ALLOCATION = {"id": "alloc-1", "user": "u", "project": "proj", "region": "us",
              "status": {"cloud": "RUNNING"},
              "urls": {"base": {"status": "RUNNING", "url": "https://base.pieces.cloud"},
                       "id": {"status": "RUNNING", "url": "https://alloc-1.pieces.cloud"}}}


@pytest.fixture
def signed_in(client):
    response = client.post("/user/select", json={"user_id": "auth0|1", "name": "Ada"})
    assert response.status_code == 200
    return response.get_json()


@pytest.mark.parametrize("send_profile", [False, True], ids=["no body", "profile"])
def test_connect_without_an_allocation_says_the_cloud_failed_and_writes_nothing(app, client, signed_in,
                                                                              send_profile):
    before = dump_database(app)
    response = client.post("/allocations/connect", json=signed_in if send_profile else None)
    assert response.status_code == 200 and response.mimetype == "application/json"
    allocation = AllocationCloud.from_json(response.get_data(as_text=True))  # the SDK's model parses it
    assert allocation.status.cloud == AllocationStatusEnum.FAILED
    assert allocation.user == signed_in["id"]
    assert (allocation.urls.base.status, allocation.urls.id.status) == (AllocationStatusEnum.FAILED,) * 2
    assert dump_database(app) == before
    assert client.get("/user").get_json() == {"user": signed_in}


def test_connect_answers_the_allocation_the_profile_holds(client, signed_in):
    stored = client.post("/user/update", json={**signed_in, "allocation": ALLOCATION}).get_json()
    response = client.post("/allocations/connect", json=stored)
    assert response.status_code == 200
    assert response.get_json() == stored["allocation"] == ALLOCATION


def test_connect_nobody_signed_in_is_511(app, client):
    before = dump_database(app)
    response = client.post("/allocations/connect")
    assert response.status_code == 511 and response.mimetype == "application/problem+json"
    assert dump_database(app) == before


def test_connect_for_someone_else_is_511(client, signed_in):
    response = client.post("/allocations/connect", json={**signed_in, "id": "someone-else"})
    assert response.status_code == 511
    assert "someone-else" in response.get_json()["detail"]


def test_connect_with_an_invalid_profile_is_400_naming_the_field(client, signed_in):
    response = client.post("/allocations/connect", json={"id": signed_in["id"]})
    assert response.status_code == 400
    assert [param["name"] for param in response.get_json()["invalid-params"]] == ["aesthetics"]
