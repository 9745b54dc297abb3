"""``python -m vaelab``: the ``vaelab`` command."""

import sys

from vaelab.cli import main

if __name__ == "__main__":
    sys.exit(main())
