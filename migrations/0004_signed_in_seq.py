"""Who signed in here last: POST /os/sign_in signs that user in again after a sign-out.

Only the user current when this runs is known to have signed in: they get the latest seq."""
from peewee import BigIntegerField


def up(migrator, db):
    migrator.migrate(migrator.add_column("users", "signed_in_seq", BigIntegerField(null=True)))
    db.execute_sql('UPDATE "users" SET "signed_in_seq" = (SELECT "seq" FROM "state" WHERE "id" = 1) '
                   'WHERE "id" = (SELECT "current" FROM "state" WHERE "id" = 1)')


def down(migrator, db):
    migrator.migrate(migrator.drop_column("users", "signed_in_seq"))
