"""``python -m scripts.services``: see the package's docstring."""

import sys

from .cli import main

sys.exit(main())
