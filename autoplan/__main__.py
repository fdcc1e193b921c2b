"""``python -m autoplan`` and the ``autoplan`` script: the command line.

Ctrl-C while it starts (the imports take a second) is one line and exit 130, not a
traceback; :func:`autoplan.cli.main` handles it from there on.
"""

import sys


def entry() -> int:
    try:
        from autoplan.cli import main
    except KeyboardInterrupt:
        print("autoplan: interrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(entry())
