"""The ``logpipe`` command: a thin Typer layer over the library."""
