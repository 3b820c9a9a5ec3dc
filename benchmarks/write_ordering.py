"""What bounds many instances' update throughput on one PostgreSQL: the change log's global
order, measured without the service, side by side in one run.

    python benchmarks/write_ordering.py [--instances 1,8] [--workers 2] [--clients 64]
                                        [--seconds 5] [--rounds 2] [--users spread|hot]
                                        [--postgres-url postgresql://postgres@127.0.0.1:5432/test]

Each instance is `--workers` processes (gevent workers stand-ins: one asyncio loop each) and
the `--clients` concurrent writers are split evenly across all processes. As in the service,
the writers waiting in one process share one transaction (group commit on one connection,
each write in a savepoint when several share it), and each write reads and updates a user
row and appends a change row; the transaction numbers its changes from the one state row
(the log's head) and sends a NOTIFY. A little CPU work per write stands in for the
service's Python (`--work-ms`, half before the transaction, half inside it between the read
and the write). The orderings:

- `first`: today's. The state row is locked by the first statement and held to COMMIT;
  the head is saved, NOTIFY and COMMIT are round trips of their own.
- `last`: user rows under their own row locks first; then lock the state row, insert the
  changes, NOTIFY and COMMIT, each a round trip.
- `last-1rt`: as `last`, but the state row's UPDATE ... RETURNING, the changes' INSERT and
  the NOTIFY are one statement (CTEs) sent with COMMIT in one simple query: the state row is
  held only while the server runs that query (and flushes the commit).
- `none`: no global order (the ceiling): changes numbered by a sequence, no state row.

`--users spread` has every writer update a user of its own; `hot` has them all update one
user (what benchmarks/scaleout.py does), so the user row is the one every write locks.
Printed: committed writes/s per ordering and instance count (medians over rounds, the
configurations alternating), the ratio to one instance, and the mean number of connections
waiting for a lock (pg_stat_activity sampled every 50 ms). Creates and drops its own schema.
"""
import argparse
import asyncio
import multiprocessing
import os
import statistics
import threading
import time

import psycopg
from psycopg import sql

ORDERINGS = ("first", "last", "last-1rt", "none")
SCHEMA = "write_ordering_bench_%d" % os.getpid()
CHANNEL = "write_ordering_bench"


def busy(seconds):
    """CPU work that holds the process, as the service's Python does between statements."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def create_schema(url):
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)))
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(SCHEMA)))
        conn.execute("CREATE TABLE users (id int PRIMARY KEY, document text NOT NULL)")
        conn.execute("CREATE TABLE state (id int PRIMARY KEY, seq bigint NOT NULL)")
        conn.execute("CREATE TABLE changes (seq bigint PRIMARY KEY, at timestamp NOT NULL,"
                     " user_id int NOT NULL, state text)")
        conn.execute("CREATE SEQUENCE change_seq")


def reset(url, users):
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(SCHEMA)))
        conn.execute("TRUNCATE users, state, changes")
        conn.execute("ALTER SEQUENCE change_seq RESTART")
        conn.execute("INSERT INTO state VALUES (1, 0)")
        conn.execute("INSERT INTO users SELECT i, '{}' FROM generate_series(0, %s) i", (users,))


def drop_schema(url):
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))


class Worker:
    """One process's group commit: writers queue, one transaction at a time carries the queue."""

    def __init__(self, conn, ordering, work, window):
        self.conn, self.ordering, self.work, self.window = conn, ordering, work, window
        self.queue, self.turn = [], asyncio.Lock()
        self.transactions = 0

    async def write(self, user):
        busy(self.work / 2)
        done = asyncio.get_running_loop().create_future()
        self.queue.append((user, done))
        async with self.turn:
            if not done.done():
                await asyncio.sleep(0)  # as the service yields once: ready writers queue
                batch, self.queue = self.queue, []
                try:
                    await self.transaction([user for user, _ in batch])
                    self.transactions += self.window[0] <= time.time() < self.window[1]
                except Exception as error:
                    for _, future in batch:
                        future.set_exception(error)
                else:
                    for _, future in batch:
                        future.set_result(None)
        await done

    async def transaction(self, users):
        conn, lock_user, seq = self.conn, self.ordering != "first", None
        await conn.execute("BEGIN")
        if self.ordering == "first":
            seq = (await (await conn.execute("SELECT seq FROM state WHERE id = 1 FOR UPDATE")).fetchone())[0]
        for user in users:
            if len(users) > 1:
                await conn.execute("SAVEPOINT w")
            query = "SELECT document FROM users WHERE id = %s" + (" FOR UPDATE" if lock_user else "")
            await (await conn.execute(query, (user,))).fetchone()
            busy(self.work / 2)
            await conn.execute("UPDATE users SET document = %s WHERE id = %s", ('{"n": %d}' % time.time_ns(), user))
            if self.ordering == "first":
                seq += 1
                await conn.execute("INSERT INTO changes VALUES (%s, now(), %s, NULL)", (seq, user))
            if len(users) > 1:
                await conn.execute("RELEASE SAVEPOINT w")
        await getattr(self, self.ordering.replace("-", "_"))(users, seq)

    async def first(self, users, seq):
        await self.conn.execute("UPDATE state SET seq = %s WHERE id = 1", (seq,))
        await self.conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, "%d:%d:0" % (seq - len(users) + 1, seq)))
        await self.conn.execute("COMMIT")

    async def last(self, users, _):
        n = len(users)
        cur = await self.conn.execute("UPDATE state SET seq = seq + %s WHERE id = 1 RETURNING seq", (n,))
        seq = (await cur.fetchone())[0]
        await self.conn.execute("INSERT INTO changes SELECT %s + i, now(), u, NULL"
                                " FROM unnest(%s::int[]) WITH ORDINALITY AS t(u, i)", (seq - n, users))
        await self.conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, "%d:%d:0" % (seq - n + 1, seq)))
        await self.conn.execute("COMMIT")

    async def last_1rt(self, users, _):
        """No parameters, so the statement and COMMIT go as one simple query: one round trip."""
        query = sql.SQL(
            "WITH head AS (UPDATE state SET seq = seq + {n} WHERE id = 1 RETURNING seq),"
            " logged AS (INSERT INTO changes SELECT head.seq - {n} + t.i, now(), t.u, NULL"
            " FROM head, unnest({users}::int[]) WITH ORDINALITY AS t(u, i))"
            " SELECT pg_notify({channel}, (seq - {n} + 1) || ':' || seq || ':0') FROM head; COMMIT").format(
                n=sql.Literal(len(users)), users=sql.Literal(users), channel=sql.Literal(CHANNEL))
        await self.conn.execute(query)

    async def none(self, users, _):
        query = sql.SQL(
            "WITH logged AS (INSERT INTO changes SELECT nextval('change_seq'), now(), u, NULL"
            " FROM unnest({users}::int[]) AS t(u) RETURNING seq)"
            " SELECT pg_notify({channel}, min(seq) || ':' || max(seq) || ':0') FROM logged; COMMIT").format(
                users=sql.Literal(users), channel=sql.Literal(CHANNEL))
        await self.conn.execute(query)


async def serve(url, ordering, work, users, window, started, counts):
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True, application_name="write-ordering-bench")
    await conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(SCHEMA)))
    worker = Worker(conn, ordering, work, window)
    stop_at = window[1] + 0.5
    started.wait()

    async def client(user):
        while time.time() < stop_at:
            await worker.write(user)

    await asyncio.gather(*(client(user) for user in users))
    await conn.close()
    counts.put(worker.transactions)


def process(url, ordering, work, users, window, started, counts):
    asyncio.run(serve(url, ordering, work, users, window, started, counts))


def committed(conn):
    return conn.execute(sql.SQL("SELECT count(*) FROM {}.changes").format(sql.Identifier(SCHEMA))).fetchone()[0]


def measure(args, ordering, instances):
    """Committed writes/s, write transactions/s and mean connections waiting for a lock, for
    one configuration."""
    reset(args.postgres_url, args.clients)
    processes = instances * args.workers
    per = [list(range(i, args.clients, processes)) for i in range(processes)]
    if args.users == "hot":
        per = [[0] * len(users) for users in per]
    started, counts = multiprocessing.Event(), multiprocessing.Queue()
    begin = time.time() + 2 + args.warmup
    window = (begin, begin + args.seconds)
    children = [multiprocessing.Process(target=process, args=(args.postgres_url, ordering, args.work_ms / 1000,
                                                                users, window, started, counts)) for users in per]
    for child in children:
        child.start()
    time.sleep(2)  # connected
    started.set()
    waiting, sampling = [], threading.Event()
    with psycopg.connect(args.postgres_url, autocommit=True) as conn:
        time.sleep(max(0.0, window[0] - time.time()))
        before, t0 = committed(conn), time.perf_counter()

        def sample():
            with psycopg.connect(args.postgres_url, autocommit=True) as probe:
                while not sampling.wait(0.05):
                    waiting.append(probe.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                                 " AND application_name = 'write-ordering-bench'").fetchone()[0])

        sampler = threading.Thread(target=sample)
        sampler.start()
        time.sleep(max(0.0, window[1] - time.time()))
        after, t1 = committed(conn), time.perf_counter()
        sampling.set()
        sampler.join()
    transactions = sum(counts.get(timeout=60) for _ in children)
    for child in children:
        child.join()
        if child.exitcode:
            raise SystemExit("a writer process failed (%s, %d instances)" % (ordering, instances))
    return (after - before) / (t1 - t0), transactions / args.seconds, statistics.mean(waiting) if waiting else 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--instances", default="1,8")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work-ms", type=float, default=0.6)
    parser.add_argument("--users", choices=("spread", "hot"), default="spread")
    parser.add_argument("--orderings", default=",".join(ORDERINGS))
    args = parser.parse_args()
    counts = [int(n) for n in args.instances.split(",")]
    orderings = args.orderings.split(",")
    results = {(o, n): [] for o in orderings for n in counts}
    create_schema(args.postgres_url)
    try:
        for round_ in range(args.rounds):
            for ordering in orderings:
                for n in (counts if round_ % 2 == 0 else counts[::-1]):
                    rate, commits, waiting = measure(args, ordering, n)
                    results[ordering, n].append((rate, commits, waiting))
                    print("round %d  %-8s %2d instances  %6.0f writes/s  %5.0f commits/s  %4.1f waiting for a lock"
                          % (round_ + 1, ordering, n, rate, commits, waiting), flush=True)
    finally:
        drop_schema(args.postgres_url)
    print("\n%d clients, %d workers per instance, users %s, medians of %d rounds" % (
        args.clients, args.workers, args.users, args.rounds))
    print("| ordering | " + " | ".join("%d inst. writes/s | commits/s | waiting" % n for n in counts)
          + " | " + " | ".join("%d vs 1" % n for n in counts[1:]) + " |")
    print("|---" * (1 + 3 * len(counts) + len(counts) - 1) + "|")
    for ordering in orderings:
        medians = {n: [statistics.median(column) for column in zip(*results[ordering, n])] for n in counts}
        print("| %s | " % ordering + " | ".join("%.0f | %.0f | %.1f" % tuple(medians[n]) for n in counts)
              + " | " + " | ".join("%.2f" % (medians[n][0] / medians[counts[0]][0]) for n in counts[1:]) + " |")


if __name__ == "__main__":
    main()
