"""``python -m syncflow``."""

from syncflow.cli import main

main()
