"""`python -m stellar_serving serve|classify|model-info|reload`."""

import sys

from stellar_serving.cli import main

sys.exit(main())
