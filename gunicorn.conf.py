"""gunicorn's settings for `gunicorn wsgi:app` from the top of the repository: the same ones
`userservice serve` uses (userservice/server.py), from USERSERVICE_* variables. Flags given to
gunicorn on its command line still win."""
from userservice import server
from userservice.config import checked_config  # not `config`: gunicorn reads that name as its own

globals().update(server.gunicorn_settings(checked_config()))
