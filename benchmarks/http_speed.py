"""HTTP speed of userservice beside two references, under the gunicorn settings `userservice
serve` uses.

    python benchmarks/http_speed.py [--quick] [--database-url URL] [--baseline DIR [--baseline-database-url URL]]

Starts userservice with the repository's gunicorn.conf.py (the settings and hooks of
`userservice serve`) and the references with the same worker class, worker count, worker
connections, keep-alive and timeout: bare Flask (`benchmarks/reference_app.py:app`, a fixed
1 KB body and one bare Peewee UPDATE) and a raw WSGI callable returning the same bytes
(`reference_app:raw`, the ceiling of gunicorn and gevent). It seeds a signed-in user with a
profile of about 1 KB, then drives every contender in turn, the order rotating each round,
with `wrk -t1 -c16` (127.0.0.1 only, bounded in time), and prints requests/s, p50, p99 and
the ratios to the references measured in this same run. Needs `wrk` (apt-get install wrk).

With --baseline DIR userservice as another checkout has it (say a `git worktree add
/tmp/before <commit>`) runs too, the same way, and the table gains its ratios: a change's
cost, side by side.
"""
import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from userservice import config, server  # noqa: E402  (this checkout's, whatever the working directory)

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
QUIET = ["--log-level", "warning"]


def reference_command(config_file):
    """gunicorn for a reference app, with the settings gunicorn.conf.py gives userservice,
    but not its hooks (`config_file`: an empty one, instead of the working directory's)."""
    settings = server.gunicorn_settings(config.checked_config())
    return [sys.executable, "-m", "gunicorn", "-c", config_file, "-k", settings["worker_class"], "-w", str(settings["workers"]),
            "--worker-connections", str(settings["worker_connections"]), "--keep-alive",
            str(settings["keepalive"]), "--timeout", str(settings["timeout"]), "--no-control-socket"] + QUIET


def service_command():
    return [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"] + QUIET


def free_port():
    """A port nothing listens on now (fixed ones may be another run's, on a shared machine)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
    process = subprocess.Popen(command + ["--bind", "127.0.0.1:%d" % port], cwd=cwd, env={**os.environ, **env})
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


def workers_cpu_seconds(master):
    """User + system CPU time a gunicorn master's workers have used so far (/proc)."""
    with open("/proc/%d/task/%d/children" % (master.pid, master.pid)) as children:
        pids = children.read().split()
    total = 0
    for pid in pids:
        with open("/proc/%s/stat" % pid) as stat:
            fields = stat.read().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def wrk(url, seconds, body, server):
    """One wrk run: 1 thread, 16 connections; returns (requests/s, p50 ms, p99 ms, the
    server's CPU µs per request). CPU per request hardly depends on what else runs on the
    machine, unlike requests/s and the tail."""
    command = ["wrk", "-t1", "-c16", "-d%ds" % seconds, "--latency", url]
    cpu_before = workers_cpu_seconds(server)
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        if body is not None:
            script.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                         "wrk.body = %s\n" % json.dumps(json.dumps(body)))
            script.flush()
            command[1:1] = ["-s", script.name]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    cpu = workers_cpu_seconds(server) - cpu_before
    if re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        sys.exit("wrk saw errors from %s:\n%s" % (url, output))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    percentiles = {p: float(v) * UNITS[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)}
    if len(percentiles) != 2:
        sys.exit("could not read wrk's latency percentiles:\n" + output)
    answered = int(re.search(r"(\d+) requests in", output).group(1))
    return rps, percentiles["50"], percentiles["99"], cpu / answered * 1e6


def seed(url):
    """A signed-in user whose profile is about the size of the reference body."""
    return requests.post(url + "/user/select", json={
        "user_id": "auth0|bench", "nickname": "bench", "email": "bench@example.com", "name": "B" * 600,
        "picture": "https://example.com/p.png",
    }).json()


def measure(endpoints, rounds, seconds):
    """Every endpoint's contenders in turn, the order rotating each round; medians of each
    figure per contender. `endpoints`: {name: [(contender, url, body, server process), ...]}."""
    runs = {name: {contender[0]: [] for contender in contenders} for name, contenders in endpoints.items()}
    for round_number in range(rounds):
        for name, contenders in endpoints.items():
            shift = round_number % len(contenders)
            for contender, url, body, process in contenders[shift:] + contenders[:shift]:
                runs[name][contender].append(wrk(url, seconds, body, process))
    return {name: {contender: (tuple(statistics.median(run[i] for run in results) for i in range(4)),
                               spread(results))
                   for contender, results in by_contender.items()}
            for name, by_contender in runs.items()}


def spread(results):
    """How far apart the rounds' requests/s were: (max - min) / median."""
    rates = [run[0] for run in results]
    return (max(rates) - min(rates)) / statistics.median(rates)


def print_table(results):
    """One line per endpoint and contender; to each reference measured in the same run:
    the ratio of requests/s, and this one's p99 and CPU per request over the reference's."""
    print("%-19s %-12s %7s %7s %8s %7s %7s  %s" % ("endpoint", "contender", "req/s", "p50 ms", "p99 ms",
                                                   "CPU us", "spread", "to: req/s ratio, p99 x, CPU x"))
    for name, contenders in results.items():
        references = [c for c in contenders if c in ("raw", "flask", "baseline", "peewee")]
        for contender, ((rps, p50, p99, cpu), rounds_spread) in contenders.items():
            ratios = ["%s %.2f %.2fx %.2fx" % (reference, rps / contenders[reference][0][0],
                                                p99 / contenders[reference][0][2], cpu / contenders[reference][0][3])
                      for reference in references if reference != contender and contender not in ("raw", "peewee")
                      and not (contender == "flask" and reference == "baseline")]
            print("%-19s %-12s %7.0f %7.2f %8.2f %7.0f %6.0f%%  %s" % (
                name, contender, rps, p50, p99, cpu, rounds_spread * 100, "   ".join(ratios)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 4 s per contender (about two minutes)")
    parser.add_argument("--rounds", type=int, help="rounds per contender (default 3, --quick 2)")
    parser.add_argument("--seconds", type=int, help="seconds per wrk run (default 10, --quick 4)")
    parser.add_argument("--database-url", help="userservice database (default: a temporary SQLite file)")
    parser.add_argument("--baseline", metavar="DIR", help="also run userservice from another checkout")
    parser.add_argument("--baseline-database-url",
                        help="the baseline's database (default: a temporary SQLite file)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    rounds, seconds = (2, 4) if args.quick else (3, 10)
    rounds, seconds = args.rounds or rounds, args.seconds or seconds
    workdir = tempfile.mkdtemp(prefix="userservice-bench-")
    database_url = args.database_url or "sqlite:///%s/userservice.db" % workdir
    reference_env = {"REFERENCE_DATABASE_URL": "sqlite:///%s/reference.db" % workdir}

    startup = time_to_first_answer(free_port(), "sqlite:///%s/startup.db" % workdir)
    servers = []
    try:
        def launch(command, env, port, health, cwd=ROOT):
            """(its URL, its gunicorn master process)"""
            process, url = start(command, env, port, health, cwd)
            servers.append(process)
            return url, process

        no_hooks = os.path.join(workdir, "reference.conf.py")
        open(no_hooks, "w").close()
        service = launch(service_command() + ["wsgi:app"], {"USERSERVICE_DATABASE_URL": database_url},
                         free_port(), "/.well-known/health")
        flask = launch(reference_command(no_hooks) + ["benchmarks.reference_app:app"], reference_env, free_port(),
                       "/fixed")
        raw = launch(reference_command(no_hooks) + ["benchmarks.reference_app:raw"], reference_env, free_port(), "/")
        services = [("userservice", service)]
        if args.baseline:
            baseline = os.path.abspath(args.baseline)
            services.append(("baseline", launch(service_command() + ["wsgi:app"], {
                "USERSERVICE_DATABASE_URL": args.baseline_database_url or "sqlite:///%s/baseline.db" % workdir,
                "PYTHONPATH": baseline},
                free_port(), "/.well-known/health", cwd=baseline)))
        profile = [seed(url) for _, (url, _process) in services][0]
        endpoints = {
            "GET /user": [(name, url + "/user", None, process) for name, (url, process) in services]
            + [("flask", flask[0] + "/fixed", None, flask[1]), ("raw", raw[0] + "/", None, raw[1])],
            "GET /users/{user}": [(name, url + "/users/" + profile["id"], None, process)
                                  for name, (url, process) in services]
            + [("flask", flask[0] + "/fixed", None, flask[1]), ("raw", raw[0] + "/", None, raw[1])],
            "POST /user/update": [(name, url + "/user/update", profile, process) for name, (url, process) in services]
            + [("peewee", flask[0] + "/update", profile, flask[1])],
        }
        results = measure(endpoints, rounds, seconds)
    finally:
        for process in servers:
            process.terminate()
            process.wait()
    print("database: %s; wrk -t1 -c16, %d rounds x %d s, medians; references: raw WSGI, bare Flask, "
          "bare Flask + Peewee UPDATE (peewee)%s" % (
              "SQLite" if database_url.startswith("sqlite") else database_url.split("@")[-1], rounds, seconds,
              "; baseline: userservice in %s" % args.baseline if args.baseline else ""))
    print_table(results)
    print("userservice serve: first answer %.2f s after start" % startup)


if __name__ == "__main__":
    main()
