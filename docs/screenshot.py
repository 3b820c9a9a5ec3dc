"""Make docs/page.png, the README's picture of GET /: `python docs/screenshot.py` starts
`userservice serve` on a temporary SQLite database, signs in three sample users through the
API and photographs the page in Debian's Chromium (`apt-get install chromium`)."""
import os
import socket
import subprocess
import sys
import tempfile
import time

import requests
from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page.png")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url, body):
    response = requests.post(url, json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def sample_users(url):
    post(url + "/user/select", {"user_id": "auth0|grace", "name": "Grace Hopper", "nickname": "grace",
                                "email": "grace@example.com"})
    post(url + "/user/select", {"user_id": "auth0|alan", "name": "Alan Turing", "nickname": "alan",
                                "email": "alan@example.com"})
    ada = post(url + "/user/select", {
        "user_id": "auth0|ada", "name": "Ada Lovelace", "nickname": "ada", "email": "ada@example.com",
        "identities": [{"provider": "github", "user_id": "1815"}]})
    urls = {name: {"status": "RUNNING", "url": "https://%s.example" % name} for name in ("base", "id")}
    post(url + "/user/update", {**ada, "allocation": {"id": "a1", "user": ada["id"], "project": "p",
                                                      "status": {"cloud": "RUNNING"}, "urls": urls}})
    post(url + "/user/update/vanity", {"id": ada["id"], "vanityname": "ada"})
    post(url + "/user/beta/status", {"user": ada["id"], "auth0": {"vision": {
        "from": {"value": "2024-01-01T00:00:00+00:00"}, "continuous": True}}})


def main():
    with tempfile.TemporaryDirectory() as directory:
        port = free_port()
        url = "http://127.0.0.1:%d" % port
        env = {**os.environ, "USERSERVICE_DATABASE_URL": "sqlite:///%s/sample.db" % directory}
        server = subprocess.Popen([sys.executable, "-m", "userservice.cli", "serve", "--port", str(port)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    requests.get(url + "/.well-known/health", timeout=1)
                    break
                except requests.RequestException:
                    time.sleep(0.1)
            sample_users(url)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 960, "height": 680}, locale="en-US", timezone_id="UTC")
                page.goto(url + "/")
                page.wait_for_selector('#connection[data-state="live"]')
                page.wait_for_selector("#users li")
                page.screenshot(path=OUTPUT)
                browser.close()
        finally:
            server.terminate()
            server.wait()
    print(OUTPUT)


if __name__ == "__main__":
    main()
