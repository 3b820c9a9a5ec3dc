"""HTTP speed of userservice beside the bare-Flask reference, under identical gunicorn settings.

    python benchmarks/http_speed.py [--quick] [--database-url URL] [--baseline DIR [--baseline-database-url URL]]

Starts both apps (2 gevent workers each, the settings `userservice serve` uses), seeds a
signed-in user with a profile of about 1 KB, then drives each endpoint and its reference
alternately with wrk (127.0.0.1 only, bounded in time) and prints requests/s, p50, p99 and
the ratio to the reference, all measured side by side in this one run. Needs `wrk`
(Debian: apt-get install wrk).

With --baseline DIR the reference is instead userservice as another checkout has it (say a
`git worktree add /tmp/before <commit>`), run the same way: a change's cost, side by side.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUNICORN = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "2", "--worker-connections", "6000",
            "--keep-alive", "2", "--timeout", "30", "--no-control-socket", "--log-level", "warning"]
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wait_healthy(url, path, process, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit("server exited: %s" % process.args)
        try:
            if requests.get(url + path, timeout=1).ok:
                return
        except requests.RequestException:  # not listening yet, or still booting its workers
            time.sleep(0.02)
    sys.exit("server did not start: %s" % process.args)


def start(command, env, port, health_path, cwd=ROOT):
    process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **env})
    url = "http://127.0.0.1:%d" % port
    try:
        wait_healthy(url, health_path, process)
    except BaseException:
        process.terminate()
        raise
    return process, url


def time_to_first_answer(port, database_url):
    """Seconds from `userservice serve` starting to its first 200 on a fresh database."""
    began = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "userservice.cli", "serve", "--port", str(port)],
                               env={**os.environ, "USERSERVICE_DATABASE_URL": database_url},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_healthy("http://127.0.0.1:%d" % port, "/.well-known/health", process)
    elapsed = time.monotonic() - began
    process.terminate()
    process.wait()
    return elapsed


def wrk(url, seconds, body=None):
    """One wrk run: 2 threads, 16 connections; returns (requests/s, p50 ms, p99 ms)."""
    command = ["wrk", "-t2", "-c16", "-d%ds" % seconds, "--latency", url]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        if body is not None:
            script.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                         "wrk.body = %s\n" % json.dumps(json.dumps(body)))
            script.flush()
            command[1:1] = ["-s", script.name]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        sys.exit("wrk saw errors from %s:\n%s" % (url, output))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    percentiles = {p: float(v) * UNITS[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)}
    if len(percentiles) != 2:
        sys.exit("could not read wrk's latency percentiles:\n" + output)
    return rps, percentiles["50"], percentiles["99"]


def seed(url):
    """A signed-in user whose profile is about the size of the reference body."""
    profile = requests.post(url + "/user/select", json={
        "user_id": "auth0|bench", "nickname": "bench", "email": "bench@example.com", "name": "B" * 600,
        "picture": "https://example.com/p.png",
    }).json()
    return profile


def measure(pairs, rounds, seconds):
    """Run every (name, target, reference) pair alternately, `rounds` times; medians per side."""
    results = {name: {"userservice": [], "reference": []} for name, _, _ in pairs}
    for round_number in range(rounds):
        for name, target, reference in pairs:
            sides = [("userservice", target), ("reference", reference)]
            for side, (url, body) in sides if round_number % 2 == 0 else reversed(sides):
                results[name][side].append(wrk(url, seconds, body))
    return {name: {side: tuple(statistics.median(run[i] for run in runs) for i in range(3))
                   for side, runs in sides.items()} for name, sides in results.items()}


def print_table(results):
    print("%-22s %10s %8s %8s %10s %8s %8s %7s %7s" % (
        "endpoint", "req/s", "p50 ms", "p99 ms", "ref req/s", "p50 ms", "p99 ms", "ratio", "p99 x"))
    for name, sides in results.items():
        (rps, p50, p99), (ref_rps, ref_p50, ref_p99) = sides["userservice"], sides["reference"]
        print("%-22s %10.0f %8.2f %8.2f %10.0f %8.2f %8.2f %7.2f %7.2f" % (
            name, rps, p50, p99, ref_rps, ref_p50, ref_p99, rps / ref_rps, p99 / ref_p99))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 4 s per endpoint (about a minute)")
    parser.add_argument("--database-url", help="userservice database (default: a temporary SQLite file)")
    parser.add_argument("--baseline", metavar="DIR",
                        help="compare with userservice in another checkout instead of the bare-Flask reference")
    parser.add_argument("--baseline-database-url",
                        help="the baseline's database (default: a temporary SQLite file)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    rounds, seconds = (2, 4) if args.quick else (3, 10)
    workdir = tempfile.mkdtemp(prefix="userservice-bench-")
    database_url = args.database_url or "sqlite:///%s/userservice.db" % workdir
    reference_url = "sqlite:///%s/reference.db" % workdir

    startup = time_to_first_answer(39391, "sqlite:///%s/startup.db" % workdir)
    servers = []
    try:
        service, url = start(GUNICORN + ["--bind", "127.0.0.1:39392", "wsgi:app"],
                             {"USERSERVICE_DATABASE_URL": database_url}, 39392, "/.well-known/health")
        servers.append(service)
        if args.baseline:
            baseline = os.path.abspath(args.baseline)
            reference, ref_url = start(GUNICORN + ["--bind", "127.0.0.1:39393", "wsgi:app"],
                                       {"USERSERVICE_DATABASE_URL": args.baseline_database_url
                                        or "sqlite:///%s/baseline.db" % workdir,
                                        "PYTHONPATH": baseline}, 39393, "/.well-known/health", cwd=baseline)
        else:
            reference, ref_url = start(GUNICORN + ["--bind", "127.0.0.1:39393", "benchmarks.reference_app:app"],
                                       {"REFERENCE_DATABASE_URL": reference_url}, 39393, "/fixed")
        servers.append(reference)
        profile = seed(url)
        if args.baseline:
            seed(ref_url)
            references = ["/user", "/users/" + profile["id"], "/user/update"]
        else:
            references = ["/fixed", "/fixed", "/update"]
        pairs = [
            ("GET /user", (url + "/user", None), (ref_url + references[0], None)),
            ("GET /users/{user}", (url + "/users/" + profile["id"], None), (ref_url + references[1], None)),
            ("POST /user/update", (url + "/user/update", profile), (ref_url + references[2], profile)),
        ]
        results = measure(pairs, rounds, seconds)
    finally:
        for process in servers:
            process.terminate()
            process.wait()
    print("database: %s; wrk -t2 -c16, %d rounds x %d s, medians; reference: %s" % (
        "SQLite" if database_url.startswith("sqlite") else database_url.split("@")[-1], rounds, seconds,
        "userservice in %s" % args.baseline if args.baseline else "bare Flask"))
    print_table(results)
    print("userservice serve: first answer %.2f s after start" % startup)


if __name__ == "__main__":
    main()
