"""Fan-out of /user/stream: N subscribers over WebSocket or Server-Sent Events against a real
`userservice serve` (started here, on 127.0.0.1, with a temporary SQLite database).

For each run it connects N subscribers, measures the workers' resident memory before and after
(per idle subscriber), then publishes updates of the current user one at a time and records,
for every subscriber, the delay from the moment the update's 200 arrived (the commit is then
acknowledged) to the moment the subscriber received that state.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/stream_fanout.py                 # 100 and 1000, both protocols
    .venv/bin/python benchmarks/stream_fanout.py --subscribers 100 1000 5000 --updates 30
    .venv/bin/python benchmarks/stream_fanout.py --subscribers 1000 --baseline /tmp/before

With --baseline DIR each run is made twice, side by side, against this checkout and against
userservice in DIR (say a `git worktree add /tmp/before <commit>`), in alternating order.
"""
import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import aiohttp

DEADLINE_SECONDS = 120  # every run ends by then, finished or not


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(port, workers, database_dir, checkout=None):
    """`userservice serve` of this checkout, or of another one (`checkout`, a directory)."""
    env = {**os.environ, "USERSERVICE_DATABASE_URL": "sqlite:///%s/bench.db" % database_dir,
           "USERSERVICE_STREAM_MAX_SUBSCRIBERS": "20000"}
    if checkout:
        env["PYTHONPATH"] = checkout
    process = subprocess.Popen([sys.executable, "-m", "userservice.cli", "serve", "--host", "127.0.0.1",
                                "--port", str(port), "--workers", str(workers)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=checkout)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                time.sleep(1)  # let every worker boot
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("userservice serve did not start")


def workers_rss_kb(server):
    with open("/proc/%d/task/%d/children" % (server.pid, server.pid)) as children:
        pids = children.read().split()
    total = 0
    for pid in pids:
        with open("/proc/%s/status" % pid) as status:
            total += next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return total


class Subscriber:
    """Records when each state (by username) arrived."""

    def __init__(self):
        self.arrivals = {}
        self.ready = asyncio.Event()

    def received(self, state):
        self.ready.set()
        profile = json.loads(state)
        if profile and profile.get("username"):
            self.arrivals[profile["username"]] = time.perf_counter()


async def websocket_subscriber(session, base, subscriber):
    async with session.ws_connect(base.replace("http", "ws") + "/user/stream", compress=0,
                                  autoping=True) as ws:
        async for message in ws:
            subscriber.received(message.data)


async def event_subscriber(session, base, subscriber):
    async with session.get(base + "/user/stream") as response:
        async for line in response.content:
            if line.startswith(b"data: "):
                subscriber.received(line[len(b"data: "):].decode())


async def run(base, server, protocol, count, updates):
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async with session.post(base + "/user/select", json={"user_id": "auth0|bench"}) as response:
            profile = await response.json()
        await asyncio.sleep(1)
        rss_before = workers_rss_kb(server)
        subscribers = [Subscriber() for _ in range(count)]
        connect = websocket_subscriber if protocol == "websocket" else event_subscriber
        tasks = []
        for start in range(0, count, 100):  # in batches, as a crowd of clients would arrive
            batch = subscribers[start:start + 100]
            tasks += [asyncio.create_task(connect(session, base, subscriber)) for subscriber in batch]
            await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in batch)), 60)
        await asyncio.sleep(2)
        rss_after = workers_rss_kb(server)
        committed = {}
        for number in range(updates):
            name = "bench-%d-%d" % (count, number)
            async with session.post(base + "/user/update", json={**profile, "username": name}) as response:
                assert response.status == 200, await response.text()
                committed[name] = time.perf_counter()
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)
        dropped = sum(task.done() for task in tasks)  # a stream that ended early: an error
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    latencies, missing = [], 0
    for subscriber in subscribers:
        for name, at in committed.items():
            if name in subscriber.arrivals:
                latencies.append((subscriber.arrivals[name] - at) * 1000)
            else:
                missing += 1
    return latencies, missing, dropped, (rss_after - rss_before) / count


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--protocols", nargs="+", default=["websocket", "sse"], choices=["websocket", "sse"])
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline", metavar="DIR", help="also run userservice from another checkout")
    args = parser.parse_args()
    builds = [("this", None)] + ([("baseline", os.path.abspath(args.baseline))] if args.baseline else [])
    print("%-9s %-10s %6s %9s %9s %9s %8s %8s %14s" % ("build", "protocol", "subs", "p50 ms", "p99 ms",
                                                        "max ms", "missed", "dropped", "KB/idle sub"))
    for number, (protocol, count) in enumerate((p, c) for p in args.protocols for c in args.subscribers):
        for name, checkout in builds if number % 2 == 0 else reversed(builds):
            print("%-9s %s" % (name, measure_once(args, protocol, count, checkout)), flush=True)


def measure_once(args, protocol, count, checkout):
    with tempfile.TemporaryDirectory() as database_dir:
        port = free_port()
        server = start_server(port, args.workers, database_dir, checkout)
        try:
            latencies, missing, dropped, rss_per_subscriber = asyncio.run(asyncio.wait_for(
                run("http://127.0.0.1:%d" % port, server, protocol, count, args.updates),
                DEADLINE_SECONDS))
        finally:
            server.terminate()
            server.wait(20)
    return "%-10s %6d %9.1f %9.1f %9.1f %8d %8d %14.1f" % (
        protocol, count, statistics.median(latencies), percentile(latencies, 0.99), max(latencies),
        missing, dropped, rss_per_subscriber)


if __name__ == "__main__":
    main()
