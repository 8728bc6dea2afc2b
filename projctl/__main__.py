"""`python -m projctl` runs the command-line interface."""

from projctl.cli import main

main()
