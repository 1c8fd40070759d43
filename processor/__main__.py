"""`python -m processor` is `codat-expenses`."""

from processor.cli import main

main()
