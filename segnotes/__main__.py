"""``python -m segnotes`` is the ``segnotes`` command (and ``torchrun -m segnotes train ...`` runs it per process)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
