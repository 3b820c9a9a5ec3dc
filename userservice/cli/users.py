"""`userservice users ...`: the users of the device, through the same use cases (and group
commit) as the API, so a running server's subscribers see what these commands change."""
import json

import click
from flask.cli import with_appcontext
from marshmallow import ValidationError

from .. import store, transfer
from ..errors import flatten
from ..problems import Problem


@click.group()
def users():
    """List, inspect, change, export and import the users of this device."""


def fail_with(problem):
    raise click.ClickException(problem.description)


@users.command("list")
@with_appcontext
def list_users():
    """Every user, in the order they first signed in; * marks the current one."""
    for record in transfer.export_records():
        profile = record["profile"]
        click.echo("%s %s  %-20s %-28s %s" % (
            "*" if record["current"] else " ", profile["id"], profile.get("username") or "-",
            profile.get("email") or "-", profile.get("name") or ""))


@users.command()
@click.argument("user_id")
@with_appcontext
def show(user_id):
    """One user's profile, as JSON."""
    try:
        click.echo(json.dumps(json.loads(store.get_user(user_id)), indent=2, ensure_ascii=False))
    except Problem as problem:
        fail_with(problem)


@users.command()
@click.argument("user_id")
@with_appcontext
def select(user_id):
    """Make a user of this device the current one."""
    try:
        profile = json.loads(store.select_known_user(user_id))
    except Problem as problem:
        fail_with(problem)
    click.echo("current: %s (%s)" % (profile["id"], profile.get("username") or profile.get("email") or "-"))


@users.command()
@with_appcontext
def clear():
    """Sign the current user out (nobody is current afterwards)."""
    store.clear_user()
    click.echo("nobody is signed in")


@users.command()
@click.argument("user_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_appcontext
def remove(user_id, yes):
    """Forget a user on this device (as POST /users/{user}/disconnect)."""
    if not yes:
        click.confirm("Forget user %s on this device?" % user_id, abort=True)
    try:
        store.disconnect_user(user_id)
    except Problem as problem:
        fail_with(problem)
    click.echo("removed: %s" % user_id)


@users.command("export")
@click.argument("file", type=click.File("w", encoding="utf-8"), default="-")
@with_appcontext
def export_users(file):
    """Every user, one JSON object per line (JSON Lines), to FILE or standard output."""
    for record in transfer.export_records():
        file.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")


@users.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@with_appcontext
def import_users(file):
    """Add the users of a `users export` FILE: every line is checked first, and either all
    of them are stored or none (a user already on the device is refused)."""
    records, errors = read_records(file)
    for error in errors:
        click.echo(error, err=True)
    if errors:
        raise click.ClickException("%d bad record(s): nothing was imported" % len(errors))
    with click.progressbar(length=len(records), label="importing", file=click.get_text_stream("stderr")) as bar:
        try:
            transfer.import_records(records, progress=bar.update)
        except Problem as problem:
            fail_with(problem)
    click.echo("imported %d user(s)" % len(records))


def read_records(file):
    """(line number, loaded record) for every line, and one message per bad line."""
    records, errors = [], []
    for number, line in enumerate(file, start=1):
        if not line.strip():
            continue
        try:
            records.append((number, transfer.exported_user.load(json.loads(line))))
        except ValueError as error:
            errors.append("line %d: not JSON: %s" % (number, error))
        except ValidationError as error:
            errors.append("line %d: %s" % (number, "; ".join(
                "%s: %s" % (param["name"], param["reason"]) for param in flatten(error.messages))))
    return records, errors
