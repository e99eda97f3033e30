"""``python -m chainrule.bench [SUITE ...] [--quick] [--json FILE] [--reps N] [--size S]``."""

from chainrule.bench.cli import main

raise SystemExit(main())
