#!/usr/bin/env python
"""Django's command-line utility for the example project (``python manage.py demo``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
    if sys.argv[1:2] == ["demo"]:
        # Before Django reads its settings: they take the Redis URL from REDIS_URL.
        from embedded_redis import ensure_redis

        ensure_redis()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
