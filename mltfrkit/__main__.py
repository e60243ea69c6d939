"""``python -m mltfrkit ...``: the same command line as the ``mltfrkit`` console script (mltfrkit.cli)."""

from mltfrkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
