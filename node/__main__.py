"""``python -m node`` runs the ``kith`` command."""

from __future__ import annotations

from node.cli.main import main

raise SystemExit(main())
