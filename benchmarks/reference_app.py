"""The bare-Flask reference the speed targets are measured against.

`GET /fixed` returns a fixed 1 KB JSON body from memory: the cost of the stack alone.
`POST /update` does one bare Peewee UPDATE per request, on the same pooled SQLite settings
as userservice (`userservice.storage.connect`): the cost of one durable write.
"""
import json
import os

from flask import Flask, Response, request
from peewee import IntegerField, Model, TextField

from userservice.storage import connect

FIXED_BODY = json.dumps({"user": {"id": "0" * 36, "name": "x" * 900, "aesthetics": {}}})
database = connect(os.environ["REFERENCE_DATABASE_URL"])


class Row(Model):
    id = IntegerField(primary_key=True)
    value = TextField()

    class Meta:
        database = database
        table_name = "reference_row"


with database.connection_context():
    database.create_tables([Row])
    Row.insert(id=1, value="").on_conflict_ignore().execute()

app = Flask(__name__)


@app.get("/fixed")
def fixed():
    return Response(FIXED_BODY, mimetype="application/json")


@app.post("/update")
def update():
    with database.connection_context():
        Row.update(value=request.get_data(as_text=True)).where(Row.id == 1).execute()
    return Response("{}", mimetype="application/json")
