"""``python -m occfeat ...`` is ``occfeat ...``."""

from .cli import main

raise SystemExit(main())
