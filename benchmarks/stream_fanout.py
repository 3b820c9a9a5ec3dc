"""Fan-out of /user/stream: N subscribers over WebSocket or Server-Sent Events against a real
`userservice serve` (started here, on 127.0.0.1, with a temporary SQLite database).

For each run it connects N subscribers from several client processes (so that the client is
not what is measured), measures the workers' resident memory before and after (per idle
subscriber) and their CPU while the subscribers idle, then publishes updates of the current
user one at a time and records, for every subscriber, the delay from the moment the update's
200 arrived (the commit is then acknowledged) to the moment the subscriber received that
state, and the workers' CPU time (/proc/<pid>/stat) from the first update until every
subscriber has the last one (or 30 s have passed: the rest count as missed), divided by the
states delivered: the server's CPU per delivery.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/stream_fanout.py                 # 100 and 1000, both protocols
    .venv/bin/python benchmarks/stream_fanout.py --subscribers 100 1000 5000 --updates 30
    .venv/bin/python benchmarks/stream_fanout.py --subscribers 1000 --baseline /tmp/before
    .venv/bin/python benchmarks/stream_fanout.py --subscribers 10000 --client-processes 4

With --baseline DIR each run is made twice, side by side, against this checkout and against
userservice in DIR (say a `git worktree add /tmp/before <commit>`), in alternating order.
"""
import argparse
import asyncio
import json
import multiprocessing
import os
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import aiohttp
import requests

DEADLINE_SECONDS = 180  # how long the clients may take to connect, or to report
IDLE_SECONDS = 3  # the window over which the workers' idle CPU is measured
UPDATE_GAP_SECONDS = 0.2
DELIVERY_SECONDS = 30  # how long after the last update its delivery to everyone may take


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
    total = 0
    for pid in worker_pids(server):
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
            self.arrivals[profile["username"]] = time.monotonic()  # the same clock in every process


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


def client_process(base, protocol, count, last, ready, stop, results):
    """One of the client's processes: `count` subscribers, connected in batches of 100 as a
    crowd would arrive; says when all are live and when all have received the state named
    `last`, and reports their arrivals once told to stop."""
    asyncio.run(subscribe_until_stopped(base, protocol, count, last, ready, stop, results))


async def subscribe_until_stopped(base, protocol, count, last, ready, stop, results):
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        subscribers = [Subscriber() for _ in range(count)]
        connect = websocket_subscriber if protocol == "websocket" else event_subscriber
        tasks = []
        for start in range(0, count, 100):
            batch = subscribers[start:start + 100]
            tasks += [asyncio.create_task(connect(session, base, subscriber)) for subscriber in batch]
            await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in batch)), 60)
        ready.put("connected")
        while not all(last in subscriber.arrivals for subscriber in subscribers) and not stop.is_set():
            await asyncio.sleep(0.05)
        ready.put("delivered")
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        dropped = sum(task.done() for task in tasks)  # a stream that ended early: an error
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    results.put(([subscriber.arrivals for subscriber in subscribers], dropped))


def workers_cpu_seconds(server):
    """User + system CPU time the server's workers have used so far (/proc/<pid>/stat)."""
    total = 0
    for pid in worker_pids(server):
        with open("/proc/%s/stat" % pid) as stat:
            fields = stat.read().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def worker_pids(server):
    with open("/proc/%d/task/%d/children" % (server.pid, server.pid)) as children:
        return children.read().split()


def run(base, server, protocol, count, updates, client_processes):
    """Connect `count` subscribers from `client_processes` processes, measure memory and
    the workers' CPU while they idle (ms per second), publish `updates` changes and measure the CPU they cost to deliver."""
    profile = requests.post(base + "/user/select", json={"user_id": "auth0|bench"}).json()
    time.sleep(1)
    rss_before = workers_rss_kb(server)
    context = multiprocessing.get_context("spawn")
    ready, results, stop = context.Queue(), context.Queue(), context.Event()
    shares = [count // client_processes + (1 if n < count % client_processes else 0) for n in range(client_processes)]
    names = ["bench-%d-%d" % (count, number) for number in range(updates)]
    clients = [context.Process(target=client_process, args=(base, protocol, share, names[-1], ready, stop, results),
                               daemon=True) for share in shares if share]
    for client in clients:
        client.start()
    try:
        for _ in clients:
            ready.get(timeout=DEADLINE_SECONDS)
        time.sleep(2)
        rss_after = workers_rss_kb(server)
        idle_started, idle_cpu = time.monotonic(), workers_cpu_seconds(server)
        time.sleep(IDLE_SECONDS)
        idle = (workers_cpu_seconds(server) - idle_cpu) / (time.monotonic() - idle_started)
        cpu_before, committed = workers_cpu_seconds(server), {}
        with requests.Session() as session:
            for name in names:
                response = session.post(base + "/user/update", json={**profile, "username": name})
                assert response.status_code == 200, response.text
                committed[name] = time.monotonic()
                time.sleep(UPDATE_GAP_SECONDS)
        try:  # until every subscriber has the last state, or DELIVERY_SECONDS have passed
            deadline = time.monotonic() + DELIVERY_SECONDS
            for _ in clients:
                ready.get(timeout=max(0, deadline - time.monotonic()))
        except queue.Empty:
            pass
        cpu = workers_cpu_seconds(server) - cpu_before
        stop.set()
        collected = [results.get(timeout=DEADLINE_SECONDS) for _ in clients]
    finally:
        for client in clients:
            client.join(10)
            if client.is_alive():
                client.kill()
    latencies, missing, dropped = [], 0, 0
    for arrivals_list, client_dropped in collected:
        dropped += client_dropped
        for arrivals in arrivals_list:
            for name, at in committed.items():
                if name in arrivals:
                    latencies.append((arrivals[name] - at) * 1000)
                else:
                    missing += 1
    return {"latencies": latencies, "missing": missing, "dropped": dropped,
            "kb_per_subscriber": (rss_after - rss_before) / count,
            "us_per_delivery": cpu / max(1, len(latencies)) * 1e6,
            "idle_ms_per_second": idle * 1000}


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--protocols", nargs="+", default=["websocket", "sse"], choices=["websocket", "sse"])
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--client-processes", type=int, default=4,
                        help="processes the subscribers are spread over (default 4)")
    parser.add_argument("--baseline", metavar="DIR", help="also run userservice from another checkout")
    args = parser.parse_args()
    builds = [("this", None)] + ([("baseline", os.path.abspath(args.baseline))] if args.baseline else [])
    print("server: %d gevent workers; client: %d processes; %d updates %d ms apart" % (
        args.workers, args.client_processes, args.updates, UPDATE_GAP_SECONDS * 1000))
    print("%-9s %-10s %6s %8s %8s %8s %7s %8s %9s %12s %13s" % (
        "build", "protocol", "subs", "p50 ms", "p99 ms", "max ms", "missed", "dropped", "KB/idle",
        "CPU us/deliv", "idle CPU ms/s"))
    figures = {}
    for number, (protocol, count) in enumerate((p, c) for p in args.protocols for c in args.subscribers):
        for name, checkout in builds if number % 2 == 0 else reversed(builds):
            result = figures[name, protocol, count] = measure_once(args, protocol, count, checkout)
            print("%-9s %-10s %6d %8.1f %8.1f %8.1f %7d %8d %9.1f %12.1f %13.1f" % (
                name, protocol, count, statistics.median(result["latencies"]),
                percentile(result["latencies"], 0.99), max(result["latencies"]), result["missing"],
                result["dropped"], result["kb_per_subscriber"], result["us_per_delivery"],
                result["idle_ms_per_second"]), flush=True)
        if args.baseline:
            this, before = figures["this", protocol, count], figures["baseline", protocol, count]
            print("%-9s %-10s %6d CPU per delivery %.2f of the baseline's, memory per idle subscriber %.2f" % (
                "ratio", protocol, count, this["us_per_delivery"] / before["us_per_delivery"],
                this["kb_per_subscriber"] / before["kb_per_subscriber"]), flush=True)


def measure_once(args, protocol, count, checkout):
    with tempfile.TemporaryDirectory() as database_dir:
        port = free_port()
        server = start_server(port, args.workers, database_dir, checkout)
        try:
            return run("http://127.0.0.1:%d" % port, server, protocol, count, args.updates, args.client_processes)
        finally:
            server.terminate()
            server.wait(20)


if __name__ == "__main__":
    main()
