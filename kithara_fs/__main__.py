"""``python -m kithara_fs``: the same as the ``kithara-fs`` command."""

from .cli import main

raise SystemExit(main())
