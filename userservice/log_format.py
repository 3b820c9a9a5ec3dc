"""How every line the process logs looks: text, or one JSON object per line (LOG_FORMAT), for
the workers, the master and the change-feed relay alike."""
import logging

TEXT_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"
JSON_RENAMED = {"asctime": "time", "levelname": "level", "name": "logger"}


def formatter_config(log_format):
    if log_format == "json":
        return {"()": "pythonjsonlogger.json.JsonFormatter", "fmt": JSON_FIELDS, "rename_fields": JSON_RENAMED}
    return {"format": TEXT_FORMAT}


def make_formatter(log_format):
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(JSON_FIELDS, rename_fields=JSON_RENAMED)
    return logging.Formatter(TEXT_FORMAT)


def logging_config(log_format):
    """A logging.config.dictConfig for the whole process (gunicorn's `logconfig_dict`)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"userservice": formatter_config(log_format)},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "userservice",
                                "stream": "ext://sys.stderr"}},
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False},
        },
    }
