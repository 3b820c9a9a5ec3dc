"""The `userservice` command, in Flask's idiom (click): run the server, apply migrations, check
an installation and manage the users of the device. The same commands are on the `flask`
command of every app the service is wired into (`flask --app userservice users list`)."""
import click
from flask.cli import ScriptInfo

from ..config import ConfigError
from ..version import VERSION
from .doctor import doctor
from .serve import migrate, serve
from .users import users

COMMANDS = (serve, migrate, doctor, users)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(VERSION, "--version", prog_name="userservice", message="%(version)s")
def cli():
    """userservice: the Pieces OS User and Users API, with a live stream of the current user.

    Settings come from USERSERVICE_* environment variables (see README.md)."""


for command in COMMANDS:
    cli.add_command(command)


class BadSetting(click.ClickException):
    exit_code = 2


class AppLoader(ScriptInfo):
    """Builds the app for the commands that need one; a bad setting is one line, exit 2."""

    def load_app(self):
        try:
            return super().load_app()
        except ConfigError as error:
            raise BadSetting(str(error)) from None


def main(argv=None):
    from .. import create_app

    return cli.main(args=argv, prog_name="userservice", obj=AppLoader(create_app=create_app))


def init_app(app):
    for command in COMMANDS:
        app.cli.add_command(command)
