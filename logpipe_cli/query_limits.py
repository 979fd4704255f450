"""How many events one query may ask for: apart from :mod:`logpipe_cli.query` so that
the CLI can bound ``tail --lines`` at startup without importing the reader (and redis)."""

MAX_LIMIT = 10_000
#: NDJSON streams with flat memory (in either order), so an export may ask for more
MAX_EXPORT_LIMIT = 1_000_000
