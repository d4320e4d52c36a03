"""The column-meaning check of a release: how many columns have a template meaning (one made
from the column's name: "<column> as recorded by <source>", or the name restated), how many have
none written in a contract or product, and how many are empty in every row with no reason.

    python bench/check_meanings.py RELEASE

prints, for example, "template meanings: 0 of 156 columns", and exits 1 when any column has a
template meaning.
"""

from __future__ import annotations

import sys
from pathlib import Path

from datafirst.release.meanings import check_release


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not (Path(argv[0]) / "dictionary.json").is_file():
        print("usage: python bench/check_meanings.py RELEASE (a release folder holding dictionary.json)",
              file=sys.stderr)
        return 2
    check = check_release(Path(argv[0]))
    print("\n".join(check.lines()))
    return 1 if check.template else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
