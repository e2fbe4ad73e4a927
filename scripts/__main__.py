"""``python -m convgen``: the same as the ``convgen`` command."""

from .cli import main

raise SystemExit(main())
