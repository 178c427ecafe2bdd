"""``python -m app.cli``: the same as the installed ``quire`` command."""

import sys

from app.cli import main

sys.exit(main())
