"""``python -m thermgen.train``: the recipe runner (see thermgen.train.recipe)."""

import sys

from thermgen.train.recipe import main

if __name__ == "__main__":
    sys.exit(main())
