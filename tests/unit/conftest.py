"""The unit tests import the server's Python package as `pdserver`, as the client does."""

from deploy import protocol  # noqa: F401  (registers scripts/server/lib/pdserver as pdserver)
