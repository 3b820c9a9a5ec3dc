"""Stream delivery latency across two `userservice serve` instances on one PostgreSQL schema.

    python benchmarks/http_postgres.py [--postgres-url URL] [--changes 200] [--subscribers 20]

Starts instances A and B (2 gevent workers each, as `userservice serve` runs by default) on
a fresh schema, opens WebSocket subscribers on both, then sends updates to A one at a time
and records, for each subscriber, the time from sending the update to receiving it: on B it
crosses PostgreSQL NOTIFY, on A it does not. Prints p50, p99 and max per side. Requests/s
on PostgreSQL: `python benchmarks/http_speed.py --database-url postgresql://...`.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from urllib.parse import quote

import psycopg
import requests
import websocket


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_instance(database_url):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "userservice.cli", "serve", "--port", str(port)],
                               env={**os.environ, "USERSERVICE_DATABASE_URL": database_url},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = "http://127.0.0.1:%d" % port
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/.well-known/health", timeout=1).ok:
                return process, url
        except requests.ConnectionError:
            time.sleep(0.05)
    sys.exit("userservice serve did not start")


class Subscriber:
    """A WebSocket subscriber noting when each numbered email address arrives."""

    def __init__(self, url):
        self.socket = websocket.create_connection(url.replace("http", "ws", 1) + "/user/stream", timeout=30)
        self.socket.recv()  # the state it starts from
        self.arrivals = {}
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        try:
            while frame := self.socket.recv():  # empty once the server closes
                self.arrivals[json.loads(frame)["email"]] = time.perf_counter()
        except (websocket.WebSocketException, OSError):
            pass


def measure(a_url, b_url, changes, subscribers):
    profile = requests.post(a_url + "/user/select", json={"user_id": "auth0|bench", "nickname": "bench"},
                            timeout=10).json()
    sides = {"same instance (A)": [Subscriber(a_url) for _ in range(subscribers)],
             "other instance (B)": [Subscriber(b_url) for _ in range(subscribers)]}
    sent = {}
    for number in range(changes):
        email = "n%d@bench.example" % number
        body = {**profile, "email": email}
        sent[email] = time.perf_counter()
        requests.post(a_url + "/user/update", json=body, timeout=10).raise_for_status()
        time.sleep(0.01)
    time.sleep(2)
    for side, group in sides.items():
        latencies = sorted((subscriber.arrivals[email] - at) * 1000
                           for subscriber in group for email, at in sent.items() if email in subscriber.arrivals)
        missing = changes * len(group) - len(latencies)
        print("%-20s p50 %6.1f ms   p99 %6.1f ms   max %6.1f ms   (%d deliveries, %d missing)" % (
            side, statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1],
            latencies[-1], len(latencies), missing))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--subscribers", type=int, default=20, help="per instance")
    args = parser.parse_args()
    schema = "bench_" + uuid.uuid4().hex[:12]
    with psycopg.connect(args.postgres_url, autocommit=True) as admin:
        admin.execute('CREATE SCHEMA "%s"' % schema)
    separator = "&" if "?" in args.postgres_url else "?"
    url = args.postgres_url + separator + "options=" + quote("-c search_path=%s" % schema)
    processes = []
    try:
        process, a_url = start_instance(url)
        processes.append(process)
        process, b_url = start_instance(url)
        processes.append(process)
        measure(a_url, b_url, args.changes, args.subscribers)
    finally:
        for process in processes:
            process.terminate()
            process.wait()
        with psycopg.connect(args.postgres_url, autocommit=True) as admin:
            admin.execute('DROP SCHEMA "%s" CASCADE' % schema)


if __name__ == "__main__":
    main()
