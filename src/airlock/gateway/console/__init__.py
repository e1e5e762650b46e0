"""The operator console: a small web page for admins, served by the gateway at ``/console``
(docs/console.md). Plain HTML, CSS and JavaScript from ``static/`` (package data, no build step),
behind an admin key; the JSON APIs it reads are in :mod:`airlock.gateway.console.routes`."""

from airlock.gateway.console.routes import Console, ConsoleConfig

__all__ = ["Console", "ConsoleConfig"]
