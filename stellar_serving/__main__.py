"""`python -m stellar_serving serve|classify|model-info|reload`."""

import sys

from stellar_serving.cli import main

if __name__ == "__main__":  # not when a server process (spawned: stellar_serving.processes) imports it
    sys.exit(main())
