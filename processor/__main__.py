"""`python -m processor` is `codat-expenses`, under that name in its usage and errors."""

from processor.cli import main

if __name__ == "__main__":  # not when a replay's helper process imports it
    main(prog_name="codat-expenses")
