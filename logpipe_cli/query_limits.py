"""How many events one query may ask for: apart from :mod:`logpipe_cli.query` so that
the CLI can bound ``tail --lines`` at startup without importing the reader (and redis)."""

MAX_LIMIT = 10_000
#: a JSON page is held whole before it is sent: it also stops at about this many bytes of
#: events (with a cursor for the rest), so 10,000 events of 64 KB each are not 640 MB
MAX_PAGE_BYTES = 4 * 1024 * 1024
#: a day's buffered events are read whole (its claim and live lists, in one transaction,
#: for a consistent picture): past this many, a query of that day is refused rather than
#: block Redis and fill the API with them (a drainer that keeps up holds a few thousand)
MAX_BUFFERED_READ = 200_000
#: NDJSON streams with flat memory (in either order), so an export may ask for more
MAX_EXPORT_LIMIT = 1_000_000
