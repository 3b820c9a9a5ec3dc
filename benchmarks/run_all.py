"""Every benchmark, one after the other: HTTP speed beside the references (a raw WSGI callable
and bare Flask), then the stream fan-out (latency, server CPU per delivery, memory per idle
subscriber).

    .venv/bin/pip install -e '.[bench]'   # aiohttp for the stream clients; wrk from Debian
    .venv/bin/python benchmarks/run_all.py [--quick]

--quick finishes in about two minutes; the full run takes about ten.
"""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run(script, *args):
    print("\n$ python benchmarks/%s %s" % (script, " ".join(args)), flush=True)
    subprocess.run([sys.executable, os.path.join(HERE, script), *args], check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    quick = parser.parse_args().quick
    run("http_speed.py", *(["--quick"] if quick else []))
    run("stream_fanout.py", *(["--subscribers", "100", "1000", "--updates", "10"] if quick else
                              ["--subscribers", "100", "1000", "5000"]))


if __name__ == "__main__":
    main()
