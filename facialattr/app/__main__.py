"""``python -m facialattr.app ARGS`` runs the ``facialattr`` command."""

import sys

from facialattr.app.cli import main

sys.exit(main())
