"""``python -m raylane.contracts [REGISTRY_DIR]``: register the built-in contracts (idempotent)."""

from raylane.contracts._builtin import main

raise SystemExit(main())
