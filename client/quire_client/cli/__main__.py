"""``python -m quire_client.cli``: the same as the installed ``quire`` command."""

import sys

from quire_client.cli import main

sys.exit(main())
