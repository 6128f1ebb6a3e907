"""python3 -m guest_agent: the edif-agent CLI (for guests where the console script is not installed)."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="edif-agent")
