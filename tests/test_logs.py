"""logs.py: every request has an id (the client's when sane, else a new one) that the
response and its problem body carry; the access log and the JSON log name it and hold no
secret, on a real server."""
import json
import os
import re

import pytest
import requests

API_KEY = "logs-api-key-8c41f0"


@pytest.mark.parametrize("sent, kept", [
    ("client-id-1", True), ("a" * 128, True), ("a" * 129, False), ("bad id", False), ("<script>", False),
])
def test_request_id_is_the_clients_when_sane(client, sent, kept):
    returned = client.get("/user", headers={"X-Request-ID": sent}).headers["X-Request-ID"]
    assert (returned == sent) is kept
    assert len(returned) <= 128 and " " not in returned


def test_request_id_is_made_when_none_is_sent_and_differs_per_request(client):
    first, second = (client.get("/user").headers["X-Request-ID"] for _ in range(2))
    assert first and second and first != second


def test_request_id_differs_between_forked_workers(client):
    """gunicorn forks its workers from one master: each must make ids of its own."""
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the worker: its first id, then gone without running the parent's cleanup
        os.write(writer, client.get("/user").headers["X-Request-ID"].encode())
        os._exit(0)
    os.close(writer)
    os.waitpid(child, 0)
    with os.fdopen(reader) as pipe:
        childs = pipe.read()
    parents = client.get("/user").headers["X-Request-ID"]
    assert re.fullmatch("[0-9a-f]{32}", childs) and re.fullmatch("[0-9a-f]{32}", parents)
    assert childs != parents


def test_problem_body_names_the_request_id(client):
    response = client.get("/users/ghost", headers={"X-Request-ID": "trace-42"})
    assert response.status_code == 404 and response.get_json()["request-id"] == "trace-42"
    refused = client.get("/user", headers={"Host": "evil.example", "X-Request-ID": "trace-43"})
    assert refused.status_code == 403 and refused.get_json()["request-id"] == "trace-43"


def requests_with_secrets(server):
    headers = {"X-API-Key": API_KEY, "Connection": "close"}
    for path, request_id in (("/user", "req-plain"), ("/users/ghost", "req-missing")):
        requests.get(server.url + path, headers={**headers, "X-Request-ID": request_id}, timeout=10)
    stream = requests.get(server.url + "/user/stream?api_key=" + API_KEY, stream=True, timeout=10,
                          headers={"X-Request-ID": "req-stream", "Connection": "close"})
    next(stream.iter_content(16))
    stream.close()
    requests.get(server.url + "/user?api_key=" + API_KEY, headers={"X-Request-ID": "req-query"}, timeout=10)


def test_access_log_has_a_line_per_request_with_its_id_and_no_secret(serve, database_url):
    server = serve(database_url, args=("--access-log",), extra_env={"USERSERVICE_API_KEY": API_KEY})
    requests_with_secrets(server)
    output = server.stop()
    access = [line for line in output.splitlines() if "userservice.access" in line]
    assert any("GET /user 200" in line and "id=req-plain" in line for line in access), access
    assert any("GET /users/ghost 404" in line and "id=req-missing" in line for line in access), access
    assert any("GET /user?api_key=[redacted] 401" in line and "id=req-query" in line for line in access), access
    assert any("GET /user/stream?api_key=[redacted] 200" in line and "id=req-stream" in line for line in access)
    assert API_KEY not in output


def test_json_log_format_makes_every_line_one_object_with_the_request_id(serve, database_url):
    server = serve(database_url, args=("--access-log", "--log-format", "json"),
                   extra_env={"USERSERVICE_API_KEY": API_KEY})
    requests_with_secrets(server)
    output = server.stop()
    records = [json.loads(line) for line in output.splitlines() if line.strip()]  # each line parses
    assert {"time", "level", "logger", "message"} <= set(records[0])
    access = {record["request_id"]: record for record in records if record["logger"] == "userservice.access"}
    assert access["req-missing"]["status"] == 404 and access["req-missing"]["path"] == "/users/ghost"
    assert access["req-query"]["path"] == "/user?api_key=[redacted]"
    assert any("Worker ready" in record["message"] for record in records)  # gunicorn's own lines too
    assert API_KEY not in output
