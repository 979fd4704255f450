"""logpipe: HTTP-to-file log ingestion through a Redis buffer.

The library API (no CLI, no rich, no typer): settings, events, keys, the Redis
buffer, the file sink, the drainer and the HTTP app.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
