"""The statements every write and hot read runs, compiled once per app from the models.

Building a query with Peewee's query builder on every request costs more than SQLite takes
to run it, so each is built once, when the app starts, from the bound models, and kept as
its SQL and the order of its named parameters: the table layout stays in models.py alone.
"""
from peewee import Value


class Slot:
    """A named parameter of a statement being compiled."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


def slot(name):
    """A placeholder Peewee passes through as a parameter, unconverted, in the SQL's order."""
    return Value(Slot(name), converter=False)


class Statement:
    """One compiled query: execute it with its named parameters (its constants, like the
    state row's id, stay as compiled)."""

    def __init__(self, query):
        self.sql, self.params = query.sql()

    def execute(self, database, **values):
        return database.execute_sql(self.sql, tuple(
            values[param.name] if type(param) is Slot else param for param in self.params))

    def one(self, database, **values):
        return self.execute(database, **values).fetchone()

    def scalar(self, database, **values):
        row = self.one(database, **values)
        return row[0] if row else None


def assigning(fields):
    """`{field: slot(field.name)}` for an INSERT or UPDATE of these fields."""
    return {field: slot(field.name) for field in fields}


# What a save of a profile writes: every column but the key, those set once (who signed in,
# and when first) and the last sign-in, which only sign-ins write.
SAVED_BESIDES = ("id", "subject", "signed_in", "signed_in_seq")


class Statements:
    """The app's compiled statements. `lock_rows`: whether the backend takes row locks
    (PostgreSQL: FOR UPDATE; SQLite's write transaction already holds the whole database)."""

    def __init__(self, models, lock_rows):
        User, State, Change = models.User, models.State, models.Change
        head = State.select(State.seq, State.current).where(State.id == 1)
        self.lock_head = Statement(head.for_update() if lock_rows else head)
        self.last_seq = Statement(State.select(State.seq).where(State.id == 1))
        self.save_head = Statement(State.update(assigning((State.seq, State.current))).where(State.id == 1))
        self.append_change = Statement(Change.insert(assigning(Change._meta.sorted_fields)))
        self.prune = Statement(Change.delete().where(Change.seq <= slot("through")))
        self.user_row = Statement(
            User.select(User.id, User.subject, User.document)
            .where(User.id == slot("id")))
        saved = [field for field in User._meta.sorted_fields if field.name not in SAVED_BESIDES]
        self.saved_columns = tuple(field.name for field in saved)
        self.save_user = Statement(User.update(assigning(saved)).where(User.id == slot("id")))
        self.user_document = Statement(User.select(User.document).where(User.id == slot("id")))
        self.current_document = Statement(
            User.select(User.document).join(State, on=(State.current == User.id)).where(State.id == 1))
