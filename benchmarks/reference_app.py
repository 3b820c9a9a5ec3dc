"""The references the speed targets are measured against.

`app` (bare Flask): `GET /fixed` returns a fixed 1 KB JSON body from memory, the cost of
Flask on gunicorn; `POST /update` does one bare Peewee UPDATE per request, on the same pooled
SQLite settings as userservice (`userservice.storage.connect`), the cost of one durable write.

`raw`: a WSGI callable answering every request with the same fixed bytes and content type,
the ceiling of gunicorn and gevent alone.
"""
import json
import os

from flask import Flask, Response, request
from peewee import IntegerField, Model, TextField

from userservice.storage import connect

FIXED_BODY = json.dumps({"user": {"id": "0" * 36, "name": "x" * 900, "aesthetics": {}}})
FIXED_BYTES = FIXED_BODY.encode()
RAW_HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(FIXED_BYTES)))]
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


def raw(environ, start_response):
    """No framework at all: the bytes bare Flask's GET /fixed returns, for any request."""
    start_response("200 OK", RAW_HEADERS)
    return [FIXED_BYTES]
