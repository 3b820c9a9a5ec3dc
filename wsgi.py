"""The WSGI entry point: `gunicorn wsgi:app` from the repository root."""
from userservice import create_app

app = create_app()
