"""``python -m cli``: the ``bacnode`` command."""

from . import main

main()
