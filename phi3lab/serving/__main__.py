"""``python -m phi3lab.serving ARGS`` = ``phi3lab serve ARGS``: how ``LocalServer`` starts its child.

The module name in the child's command line is how cleanup recognises a course server.
"""

import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
