"""``python -m logpipe_cli`` = ``logpipe``."""

from logpipe_cli.cli.app import main

main()
