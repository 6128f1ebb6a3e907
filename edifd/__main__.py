"""`python3 -m edifd …` is the same as the `edifd` command (the lab guest runs it this way)."""

from edifd.cli import edifd_main

edifd_main(prog_name="edifd")
