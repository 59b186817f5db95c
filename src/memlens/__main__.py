"""python -m memlens: the command line (see memlens.cli)."""
import sys

from memlens.cli import main

if __name__ == "__main__":
    sys.exit(main())
