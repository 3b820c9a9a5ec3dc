"""The service's own version, in a module of its own so that any part can name it without
importing the package root."""
VERSION = "0.1.0"
