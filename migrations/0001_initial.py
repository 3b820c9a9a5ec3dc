"""Users, beta statuses, the state row and the change log."""
from peewee import BigIntegerField, CharField, DateTimeField, ForeignKeyField, IntegerField, Model, TextField


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class User(Base):
        id = CharField(primary_key=True)
        subject = CharField(null=True, unique=True)
        email = CharField(null=True, index=True)
        username = CharField(null=True)
        username_key = CharField(null=True, unique=True)
        vanityname = CharField(null=True)
        vanityname_key = CharField(null=True, unique=True)
        created = DateTimeField(null=True)
        updated = DateTimeField(null=True)
        signed_in = DateTimeField(index=True)
        document = TextField()

        class Meta:
            table_name = "users"

    class BetaStatus(Base):
        user = ForeignKeyField(User, primary_key=True, on_delete="CASCADE", column_name="user_id")
        vision = TextField()

        class Meta:
            table_name = "beta_statuses"

    class State(Base):
        id = IntegerField(primary_key=True)
        seq = BigIntegerField(default=0)
        current = CharField(null=True)

        class Meta:
            table_name = "state"

    class Change(Base):
        seq = BigIntegerField(primary_key=True)
        at = DateTimeField(index=True)
        kind = CharField()
        user = CharField(null=True)
        state = TextField(null=True)

        class Meta:
            table_name = "changes"

    db.create_tables([User, BetaStatus, State, Change])
    State.insert(id=1, seq=0, current=None).execute()


def down(migrator, db):
    for table in ("changes", "state", "beta_statuses", "users"):
        db.execute_sql('DROP TABLE "%s"' % table)
