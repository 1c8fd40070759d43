"""`python -m processor` is `codat-expenses`, under that name in its usage and errors."""

from processor.cli import main

main(prog_name="codat-expenses")
