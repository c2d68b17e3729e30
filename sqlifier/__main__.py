"""`python -m sqlifier` is the `sqlifier` command."""

from __future__ import annotations

from sqlifier.cli.fasthelp import main

if __name__ == "__main__":
    main()
