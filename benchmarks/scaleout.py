"""N instances of `userservice serve` on one PostgreSQL database: connections used, total
update throughput and stream delivery latency per N, measured side by side in one run.

    python benchmarks/scaleout.py [--quick] [--instances 1,2,4,8,16] [--clients 64] [--seconds 8]
                                  [--rounds 2] [--pgbouncer] [--role-limit 60] [--pool 10]
                                  [--postgres-url postgresql://postgres@127.0.0.1:5432/test]

For each N (in every round, the Ns alternating so that the machine's other load falls on all
of them alike) it creates a fresh database, starts N instances of 2 gevent workers and holds
the same total load on them: `--clients` wrk connections in all, split evenly across the
instances, each sending POST /user/update for one (non-current) user. Meanwhile a probe
updates the current user 20 times a second through the instances in turn, and WebSocket
subscribers (2 per instance) note when each update arrives. Printed per N (medians over the
rounds): the peak of the database's client connections (pg_stat_activity), updates/s in
all and refused (non-2xx) answers, write transactions/s and changes per write transaction
(each sends one NOTIFY, which this counts, and the change log's seq: group commit batches
the writes waiting in one process), delivery p50 /
p99 from sending the probe's update to a subscriber receiving it, and updates/s relative to
N=1; and what the database's connections were doing, on average over samples every 50 ms:
waiting for a lock (the state row every write transaction holds until it commits), in a
transaction but waiting for the service (idle in transaction: its worker busy elsewhere),
or running a statement.

--pgbouncer puts Debian's PgBouncer (transaction pooling, started here on a free port) in
front of the request pools; LISTEN and migrations go direct. --role-limit L runs as a new
role WITH CONNECTION LIMIT L. Needs wrk (apt-get install wrk).
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import psycopg
import requests
import websocket

PROBE_INTERVAL = 0.05
BENCH_NAME = "userservice-scaleout-bench"  # this script's own connection, not counted


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def admin(postgres_url):
    return psycopg.connect(postgres_url, autocommit=True)


def database_url(postgres_url, user, database, port=None):
    info = psycopg.conninfo.conninfo_to_dict(postgres_url)
    return "postgresql://%s@%s:%s/%s" % (user, info.get("host", "127.0.0.1"), port or info.get("port", 5432),
                                         database)


class PgBouncer:
    """Debian's PgBouncer in transaction pooling mode on a free port, for this run."""

    def __init__(self, postgres_url, users, server_connections):
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        info = psycopg.conninfo.conninfo_to_dict(postgres_url)
        self.directory = tempfile.mkdtemp(prefix="userservice-bench-pgbouncer-")
        self.port = free_port()
        with open(os.path.join(self.directory, "pgbouncer.ini"), "w") as config:
            config.write("[databases]\n* = host=%s port=%s\n[pgbouncer]\nlisten_addr = 127.0.0.1\n"
                         "listen_port = %d\nunix_socket_dir =\nauth_type = trust\nauth_file = %s/users.txt\n"
                         "pool_mode = transaction\nmax_client_conn = 5000\ndefault_pool_size = %d\n"
                         "max_db_connections = %d\nquery_wait_timeout = 10\nlogfile = %s/pgbouncer.log\n" % (
                             info.get("host", "127.0.0.1"), info.get("port", 5432), self.port,
                             self.directory, server_connections, server_connections, self.directory))
        with open(os.path.join(self.directory, "users.txt"), "w") as userlist:
            userlist.writelines('"%s" ""\n' % user for user in users)
        root = os.geteuid() == 0  # PgBouncer refuses to run as root: it runs as nobody
        if root:
            shutil.chown(self.directory, "nobody")
            os.chmod(self.directory, 0o755)
        self.process = subprocess.Popen([binary, *(["-u", "nobody"] if root else []),
                                         os.path.join(self.directory, "pgbouncer.ini")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def close(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_instance(env):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "userservice.cli", "serve", "--port", str(port)],
                               env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = "http://127.0.0.1:%d" % port
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit("userservice serve exited")
        try:
            if requests.get(url + "/.well-known/ready", timeout=2).ok:
                return process, url
        except requests.RequestException:
            pass
        time.sleep(0.1)
    sys.exit("userservice serve did not start")


class Subscriber:
    """A WebSocket subscriber noting when each probe's email address arrives."""

    def __init__(self, url):
        self.socket = websocket.create_connection(url.replace("http", "ws", 1) + "/user/stream", timeout=60)
        self.socket.recv()  # the state it starts from
        self.arrivals = {}
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        try:
            while frame := self.socket.recv():
                state = json.loads(frame)
                if state:
                    self.arrivals[state.get("email")] = time.perf_counter()
        except (websocket.WebSocketException, OSError, ValueError):
            pass

    def close(self):
        try:
            self.socket.close()
        except OSError:
            pass


# Each request sets another email address: an update that changes nothing writes nothing.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local template, n = %s, 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, (template:gsub("@EMAIL@", "%s-" .. n .. "@load.example")))
end
"""


def wrk(url, connections, seconds, body, name):
    """wrk's (requests/s, non-2xx answers) for POST /user/update with `body`, each request
    with an email address of its own (`name`-<n>@load.example)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % (json.dumps(json.dumps({**body, "email": "@EMAIL@"})), name))
    try:
        output = subprocess.run(["wrk", "-t1", "-c%d" % connections, "-d%ds" % seconds, "--timeout", "30s",
                                 "-s", script.name, url + "/user/update"],
                                capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script.name)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    refused = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return rate, int(refused.group(1)) if refused else 0


class CommitCounter:
    """Every write transaction sends one NOTIFY whose payload names the seq it ended at: listening
    counts the transactions, and the seqs the changes, committed in a window of seqs."""

    def __init__(self, postgres_url, database):
        self.connection = psycopg.connect(database_url(postgres_url, "postgres", database), autocommit=True,
                                          application_name=BENCH_NAME)
        self.connection.execute("LISTEN userservice_changes")
        self.seqs = []
        self.thread = threading.Thread(target=self.listen, daemon=True)
        self.thread.start()

    def listen(self):
        try:
            for notify in self.connection.notifies():  # payload: first:last:streamed
                self.seqs.append(int(notify.payload.split(":")[1]))
        except psycopg.Error:
            pass  # closed

    def last_seq(self):
        with psycopg.connect(self.connection.info.dsn, autocommit=True) as connection:
            return connection.execute("SELECT seq FROM state WHERE id = 1").fetchone()[0]

    def between(self, first, last):
        """(changes, write transactions) with seqs in (first, last]."""
        return last - first, sum(1 for seq in self.seqs if first < seq <= last)

    def close(self):
        self.connection.close()


def connections_to(postgres_url, database):
    """(client connections, of which: waiting for a lock, in a transaction waiting for the
    service, running a statement) in pg_stat_activity."""
    with admin(postgres_url) as connection:
        return connection.execute(
            "SELECT count(*), count(*) FILTER (WHERE wait_event_type = 'Lock'), "
            "count(*) FILTER (WHERE state = 'idle in transaction'), "
            "count(*) FILTER (WHERE state = 'active' AND wait_event_type IS DISTINCT FROM 'Lock' "
            "AND query NOT LIKE 'LISTEN%%') "
            "FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend' "
            "AND application_name IS DISTINCT FROM %s", (database, BENCH_NAME)).fetchone()


def measure(options, instances_count):
    """One run with N instances; returns its figures."""
    database = "bench_scaleout_%s" % uuid.uuid4().hex[:8]
    user = options.user
    with admin(options.postgres_url) as connection:
        connection.execute('CREATE DATABASE "%s" OWNER "%s"' % (database, user))
    bouncer = processes = subscribers = None
    try:
        direct = database_url(options.postgres_url, user, database)
        env = {"USERSERVICE_DATABASE_URL": direct, "USERSERVICE_DATABASE_DIRECT_URL": direct,
               "USERSERVICE_METRICS": "false"}
        if options.pool:
            env["USERSERVICE_DATABASE_MAX_CONNECTIONS"] = str(options.pool)
        if options.pgbouncer:
            budget = (options.role_limit or 90) - instances_count  # the relays' LISTEN go direct
            bouncer = PgBouncer(options.postgres_url, {user, "postgres"}, max(2, budget))
            env["USERSERVICE_DATABASE_URL"] = database_url(options.postgres_url, user, database, bouncer.port)
        started = [start_instance(env) for _ in range(instances_count)]
        processes, urls = [process for process, _ in started], [url for _, url in started]
        load = requests.post(urls[0] + "/user/select", json={"user_id": "auth0|load"}, timeout=30).json()
        probe = requests.post(urls[0] + "/user/select", json={"user_id": "auth0|probe"}, timeout=30).json()
        subscribers = [Subscriber(url) for url in urls for _ in range(2)]
        sent, stop, peak, samples = {}, threading.Event(), [0], []

        def send_probes():
            number = 0
            while not stop.is_set():
                email = "p%d@bench.example" % number
                sent[email] = time.perf_counter()
                requests.post(urls[number % len(urls)] + "/user/update", json={**probe, "email": email}, timeout=60)
                number += 1
                stop.wait(PROBE_INTERVAL)

        def sample_connections():
            while not stop.is_set():
                sample = connections_to(options.postgres_url, database)
                peak[0] = max(peak[0], sample[0])
                samples.append(sample[1:])
                stop.wait(0.05)

        helpers = [threading.Thread(target=send_probes), threading.Thread(target=sample_connections)]
        for helper in helpers:
            helper.start()
        counter = CommitCounter(options.postgres_url, database)
        seq_before, began = counter.last_seq(), time.monotonic()
        results = [None] * instances_count
        share = [options.clients // instances_count + (i < options.clients % instances_count)
                 for i in range(instances_count)]

        def drive(index):
            results[index] = wrk(urls[index], max(1, share[index]), options.seconds, load, "i%d" % index)

        drivers = [threading.Thread(target=drive, args=(i,)) for i in range(instances_count)]
        for driver in drivers:
            driver.start()
        for driver in drivers:
            driver.join()
        stop.set()
        for helper in helpers:
            helper.join()
        elapsed = time.monotonic() - began
        time.sleep(1)
        changes, commits = counter.between(seq_before, counter.last_seq())
        counter.close()
        delays = sorted((subscriber.arrivals[email] - at) * 1000 for subscriber in subscribers
                        for email, at in sent.items() if email in subscriber.arrivals)
        expected = len(sent) * len(subscribers)
        updates = sum(rate for rate, _ in results)
        return {"connections": peak[0], "updates": updates, "refused": sum(refused for _, refused in results),
                "commits": commits / elapsed, "per_commit": changes / commits if commits else 0.0,
                "p50": delays[len(delays) // 2] if delays else float("nan"),
                "p99": delays[int(len(delays) * 0.99)] if delays else float("nan"),
                "missing": expected - len(delays),
                "lock_waits": statistics.mean(s[0] for s in samples),
                "app_waits": statistics.mean(s[1] for s in samples),
                "running": statistics.mean(s[2] for s in samples)}
    finally:
        for subscriber in subscribers or ():
            subscriber.close()
        for process in processes or ():
            process.terminate()
        for process in processes or ():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        if bouncer is not None:
            bouncer.close()
        with admin(options.postgres_url) as connection:
            connection.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % database)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres-url", default=os.environ.get(
        "USERSERVICE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--instances", default="1,2,4,8,16")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pool", type=int, default=0, help="DATABASE_MAX_CONNECTIONS per worker (default: serve's)")
    parser.add_argument("--pgbouncer", action="store_true")
    parser.add_argument("--role-limit", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="N = 1 and 8, one round of 5 s")
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    if options.quick:
        options.instances, options.rounds, options.seconds = "1,8", 1, 5
    counts = [int(n) for n in options.instances.split(",")]
    options.user = "postgres"
    if options.role_limit:
        options.user = "bench_limited_%s" % uuid.uuid4().hex[:8]
        with admin(options.postgres_url) as connection:
            connection.execute('CREATE ROLE "%s" LOGIN CONNECTION LIMIT %d' % (options.user, options.role_limit))
    figures = {n: [] for n in counts}
    try:
        for round_number in range(options.rounds):
            for n in (counts if round_number % 2 == 0 else counts[::-1]):
                figures[n].append(measure(options, n))
                print("round %d, N=%d: %.0f updates/s" % (round_number + 1, n, figures[n][-1]["updates"]),
                      file=sys.stderr, flush=True)
    finally:
        if options.role_limit:
            with admin(options.postgres_url) as connection:
                connection.execute('DROP ROLE IF EXISTS "%s"' % options.user)
    print("%d update clients in all (wrk), 2 gevent workers per instance, %d round(s) x %d s, medians%s%s" % (
        options.clients, options.rounds, options.seconds, "; request pools through PgBouncer" if options.pgbouncer
        else "", "; role CONNECTION LIMIT %d" % options.role_limit if options.role_limit else ""))
    print("| instances | peak connections | updates/s | vs 1 | refused | write commits/s | changes/commit "
          "| delivery p50 ms | p99 ms | missing | waiting for the row lock | in a transaction, waiting for "
          "the service | running a statement |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    base = statistics.median(f["updates"] for f in figures[counts[0]])
    for n in counts:
        row = {key: statistics.median(f[key] for f in figures[n]) for key in figures[n][0]}
        print("| %d | %d | %.0f | %.2f | %d | %.0f | %.1f | %.1f | %.1f | %d | %.1f | %.1f | %.1f |" % (
            n, row["connections"], row["updates"], row["updates"] / base, row["refused"], row["commits"],
            row["per_commit"], row["p50"], row["p99"], row["missing"], row["lock_waits"], row["app_waits"],
            row["running"]))


if __name__ == "__main__":
    main()
