"""How the service is run: `userservice migrate|serve`, `flask --app userservice run` and
`gunicorn wsgi:app`, each as a real process."""
import concurrent.futures
import os
import subprocess
import sys
import time

import pytest
import requests

from conftest import RunningServer, free_port
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


def test_serve_with_an_unusable_setting_stops_with_one_line(sqlite_url):
    env = {**os.environ, "USERSERVICE_DATABASE_URL": sqlite_url, "USERSERVICE_PIECES_OS_VERSION": "twelve"}
    result = subprocess.run([os.path.join(BIN, "userservice"), "serve", "--port", str(free_port())], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "USERSERVICE_PIECES_OS_VERSION" in result.stderr


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
