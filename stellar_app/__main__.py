import sys

from stellar_app.cli import main

sys.exit(main())
