# Hand-written module (not generated from a notebook).
"""`python -m spongebob ...` (also what `torchrun -m spongebob train ...` runs)."""

import sys

from spongebob.cli import main

if __name__ == "__main__":
    sys.exit(main())
