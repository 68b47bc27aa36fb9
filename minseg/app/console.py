"""The ``minseg`` console script: ``minseg.app.cli`` imported where a Ctrl-C can be caught.

Importing the command line imports NumPy and most of minseg, which takes a moment; a Ctrl-C in that moment
would end the program with a traceback. ``minseg`` and ``minseg.app`` import nothing heavy themselves
(``minseg/__init__.py`` imports each name on first use), so this module runs before any of that starts, and an
interrupt while starting prints one line and exits 130 (128 + SIGINT, as ``minseg train`` does after Ctrl-C).
The examples start through it too.
"""
import sys

__all__ = ["main", "INTERRUPTED"]

INTERRUPTED = "interrupted while starting; nothing was done"


def main(argv=None, **options):
    """``cli.main(argv, **options)``, once the command line is imported; 130 if Ctrl-C comes before."""
    try:
        from . import cli
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    return cli.main(argv, **options)


if __name__ == "__main__":
    sys.exit(main())
