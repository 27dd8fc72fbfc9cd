"""What the report scripts share: ``NAME=PREDICTIONS.csv`` arguments, each read and checked, and ``--out``."""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

NEEDED = ("corpus", "true", "pred")          # the columns every out-of-fold predictions table has


def named_tables(description: str, argv: list[str] | None = None) -> tuple[dict[str, pd.DataFrame], Path | None]:
    """The tables named on the command line and the ``--out`` JSON path; a bad argument ends the
    program with a one-line message (exit status 2), never a traceback."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("tables", nargs="+", metavar="NAME=CSV")
    ap.add_argument("--out", type=Path, help="also write every figure to this JSON file")
    args = ap.parse_args(argv)
    tables = {}
    for item in args.tables:
        name, _, path = item.partition("=")
        if not path or not Path(path).is_file():
            ap.error(f"{item!r} is not NAME=PREDICTIONS.csv of an existing file")
        try:
            table = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            ap.error(f"{path} cannot be read as a CSV table ({exc})")
        missing = [c for c in NEEDED if c not in table.columns]
        if missing:
            ap.error(f"{path} is not a predictions table (no {', '.join(missing)} column)")
        tables[name] = table
    return tables, args.out
