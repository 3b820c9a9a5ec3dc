"""Nothing acknowledged is lost: not to SIGKILL, not to concurrent read-modify-write writers."""
import itertools
import json
import os
import signal
import threading
import time

import requests

from userservice import create_app, store
from conftest import discard


def child_pids(pid):
    with open("/proc/%d/task/%d/children" % (pid, pid)) as children:
        return [int(child) for child in children.read().split()]


def kill_hard(server):
    """SIGKILL the gunicorn master and its workers, as a power cut would leave them."""
    workers = child_pids(server.process.pid)
    for pid in [server.process.pid, *workers]:
        os.kill(pid, signal.SIGKILL)
    server.process.wait()


def profile_with_name(profile, name):
    return {**profile, "name": name}


def test_update_acknowledged_writes_survive_sigkill(serve, database_url):
    server = serve(database_url)
    profile = requests.post(server.url + "/user/select", json={"user_id": "auth0|durable"}).json()
    acknowledged = None
    for number in range(40):
        response = requests.post(server.url + "/user/update", json=profile_with_name(profile, "v%d" % number))
        assert response.status_code == 200
        acknowledged = "v%d" % number
    kill_hard(server)

    app = create_app({"DATABASE_URL": database_url})
    try:
        with app.app_context():
            assert store.get_user(profile["id"]).count('"name":"%s"' % acknowledged) == 1
            assert '"name":"%s"' % acknowledged in store.current_profile()
    finally:
        discard(app)


def test_read_modify_write_endpoints_keep_each_others_changes(client):
    """Beta status, vanity name and updates interleave; the last profile has every change."""
    profile = client.post("/user/select", json={"user_id": "auth0|rmw", "nickname": "rmw"}).json
    allocation = {"id": "a", "user": profile["id"], "project": "p",
                  "status": {"cloud": "RUNNING"},
                  "urls": {"base": {"status": "RUNNING", "url": "https://b"},
                           "id": {"status": "RUNNING", "url": "https://i"}}}
    client.post("/user/update", json={**profile, "allocation": allocation})
    beta = {"from": {"value": "2026-01-01T00:00:00Z"}, "continuous": True}
    errors = []

    def run(request):
        response = request()
        if response.status_code != 200:
            errors.append(response.get_data(as_text=True))

    requests_to_send = [
        lambda: client.post("/user/beta/status", json={"user": profile["id"], "auth0": {"vision": beta}}),
        lambda: client.post("/user/update/vanity", json={"id": profile["id"], "vanityname": "mark"}),
        lambda: client.get("/user/refresh"),
    ]
    threads = [threading.Thread(target=run, args=(request,)) for request in requests_to_send * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    final = client.get("/user").json["user"]
    assert final["vanityname"] == "mark"
    assert final["allocation"]["urls"]["vanity"]["url"] == "https://mark.pieces.cloud"
    assert final["auth0"]["beta"]["continuous"] is True


def test_update_concurrent_acknowledged_writes_survive_sigkill(serve, database_url):
    """Writers on both workers, their writes grouped into shared transactions, then a power
    cut mid-load: every acknowledged write is on disk (the one in flight may be too)."""
    server = serve(database_url)
    profiles = [requests.post(server.url + "/user/select", json={"user_id": "auth0|w%d" % n}).json()
                for n in range(6)]
    acknowledged = [-1] * len(profiles)
    refused = []
    load_running = threading.Event()

    def writer(index):
        session = requests.Session()
        for number in itertools.count():
            try:
                response = session.post(server.url + "/user/update",
                                        json=profile_with_name(profiles[index], "n%d" % number), timeout=10)
            except requests.RequestException:  # the server is gone
                return
            if response.status_code != 200:
                refused.append(response.text)
                return
            acknowledged[index] = number
            load_running.set()

    threads = [threading.Thread(target=writer, args=(index,)) for index in range(len(profiles))]
    for thread in threads:
        thread.start()
    assert load_running.wait(10)
    time.sleep(1)
    kill_hard(server)
    for thread in threads:
        thread.join(15)
    assert refused == []

    app = create_app({"DATABASE_URL": database_url})
    try:
        with app.app_context():
            for profile, last in zip(profiles, acknowledged):
                stored = json.loads(store.get_user(profile["id"]))["name"]
                assert last >= 0 and int(stored[1:]) in (last, last + 1), (stored, last)
    finally:
        discard(app)
