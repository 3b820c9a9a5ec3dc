"""How the service is run: `userservice migrate|serve`, `flask --app userservice run` and
`gunicorn wsgi:app`, each as a real process."""
import concurrent.futures
import os
import subprocess
import sys
import time

import pytest
import requests

from conftest import RunningServer, free_port, raw_exchange
from userservice import storage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def run_cli(database_url, *args):
    env = {**os.environ, "USERSERVICE_DATABASE_URL": database_url}
    return subprocess.run([os.path.join(BIN, "userservice"), *args], env=env, capture_output=True, text=True,
                          timeout=60, check=True).stdout


def test_migrate_applies_migrations_then_nothing(database_url):
    first = run_cli(database_url, "migrate")
    assert "applied: 0001_initial" in first
    assert "database: %s" % storage.describe(database_url) in first
    assert "applied: nothing" in run_cli(database_url, "migrate")


def test_version_option_prints_the_version():
    import userservice

    assert run_cli("sqlite:///unused.db", "--version").strip() == userservice.__version__


def test_serve_prints_the_database_and_answers_health(serve, database_url):
    server = serve(database_url)
    assert requests.get(server.url + "/.well-known/health", timeout=30).text == "ok"
    assert "database: %s" % storage.describe(database_url) in server.stop()


def test_serve_workers_started_at_once_on_a_fresh_database_all_come_up(database_url):
    """Three servers of two workers each race to migrate the same empty database."""
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        servers = list(pool.map(lambda _: RunningServer(database_url), range(3)))
    try:
        for server in servers:
            response = requests.post(server.url + "/user/select", json={"user_id": "auth0|%d" % server.port},
                                     timeout=30)
            assert response.status_code == 200, response.text
        assert len(requests.get(servers[0].url + "/users", timeout=30).json()["iterable"]) == 3
    finally:
        logs = [server.stop() for server in servers]
    for log in logs:
        assert log.count("Booting worker") == 2
        assert "Traceback" not in log and "Worker failed to boot" not in log


def test_serve_takes_no_script_name_or_path_info_from_clients(serve, sqlite_url):
    """gunicorn would take them from any client on 127.0.0.1 as if a proxy had set them, and a
    SCRIPT_NAME the path does not start with would be its 500."""
    server = serve(sqlite_url, workers=1)
    for header in ("SCRIPT_NAME: /elsewhere", "PATH_INFO: /users"):
        request = "GET /user HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n\r\n" % header
        (response,) = raw_exchange(server.port, request.encode()).responses
        assert (response.status, response.body) == (200, b"{}")


def wait_for_health(process, url, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            response = requests.get(url + "/.well-known/health", timeout=1)
            if response.ok:
                return response
        except requests.ConnectionError:
            time.sleep(0.2)
    pytest.fail("%s did not answer in %ss" % (url, timeout))


def stop(process):
    process.terminate()
    try:
        return process.communicate(timeout=15)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()[0]


@pytest.mark.parametrize("command", [
    ["flask", "--app", "userservice", "run", "--port", "{port}"],
    ["gunicorn", "-k", "gevent", "-b", "127.0.0.1:{port}", "wsgi:app"],
], ids=["flask run", "gunicorn wsgi:app"])
def test_other_ways_to_run_serve_health(sqlite_url, command):
    port = free_port()
    argv = [os.path.join(BIN, command[0])] + [arg.format(port=port) for arg in command[1:]]
    env = {**os.environ, "USERSERVICE_DATABASE_URL": sqlite_url}
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        response = wait_for_health(process, "http://127.0.0.1:%d" % port)
        assert response.text == "ok"
    finally:
        stop(process)
