"""Rewrite README's table of run options from RunConfig (job/shardscore/config.py).

    PYTHONPATH=job python scripts/render-options-table.py [README.md]

tests/test_options.py fails when README's table differs from what this writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from shardscore.config import RunConfig
from shardscore.options import with_table


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else Path(__file__).resolve().parents[1] / "README.md")
    path.write_text(with_table(path.read_text(encoding="utf-8"), RunConfig), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
