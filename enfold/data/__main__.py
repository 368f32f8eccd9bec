"""``python -m enfold.data photos [--short-side N]``: list the photo collection and its split."""

from __future__ import annotations

import sys

from enfold.data.photos import main

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "photos":
        sys.exit("usage: python -m enfold.data photos [--short-side N]")
    main(sys.argv[2:])
