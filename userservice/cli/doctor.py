"""`userservice doctor`: is this installation ready to run? One line per check."""
import click

from .. import health, server
from ..config import ConfigError, configure


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), default=39300, help="The port `serve` would use.")
@click.option("--host", default="127.0.0.1", help="The address `serve` would use.")
def doctor(host, port):
    """Check the configuration, the database, the migrations, the port and the OIDC keys."""
    from flask import Flask

    from .. import create_app

    failures = 0

    def report(name, problem):
        nonlocal failures
        failures += bool(problem)
        click.echo("%-4s %-13s %s" % ("FAIL" if problem else "ok", name, problem or ""))

    try:
        configure(Flask("userservice"))
    except ConfigError as error:
        report("configuration", str(error))
        raise SystemExit(1)
    report("configuration", None)
    report("port", server.port_problem("%s:%d" % (host, port)))
    try:
        app = create_app({"MIGRATE_ON_START": False})
    except Exception as error:
        report("database", " ".join(str(error).split()))
        raise SystemExit(1)
    service = app.extensions["userservice"]
    try:
        for name, check in (("database", health.database), ("migrations", health.migrations),
                            ("oidc keys", health.token_keys)):
            report(name, check(service))
    finally:
        service.close()
    raise SystemExit(1 if failures else 0)
