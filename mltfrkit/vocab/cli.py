"""``mltfrkit vocab``: list, fetch and probe token tables.

Each handler takes the argparse namespace and returns an exit code; the work is done by
library calls that notebooks can make too.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from .download import ChecksumError, DownloadError
from .formats import FormatError
from .hub import SourceUnavailable
from .neighbours import nearest_many
from .sources import PRESETS, UnknownSource, ensure_table, list_sources, load_table, resolve_preset
from .table import cache_root

EXPECTED_ERRORS = (UnknownSource, SourceUnavailable, ChecksumError, DownloadError, FormatError, FileNotFoundError, ValueError)


def _setup_logging() -> None:
    logger = logging.getLogger("mltfrkit.vocab")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("  %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _dir_size(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def cmd_list(args: argparse.Namespace) -> int:
    rows = list_sources()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<26}{'V x d':>16}  {'cached':<7}{'route':<6} {'presets':<18}origin")
    for row in rows:
        shape = f"{row['V']} x {row['d']}"
        presets = ",".join(row["presets"]) or "-"
        cached = "yes" if row["cached"] else "no"
        print(f"{row['name']:<26}{shape:>16}  {cached:<7}{row['route'] or '-':<6} {presets:<18}{row['origin']}")
    print(f"\ncache: {cache_root()}  (presets: {', '.join(f'{k}={len(v)}' for k, v in PRESETS.items())})")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    _setup_logging()
    try:
        names = [name for target in args.targets for name in resolve_preset(target)]
    except UnknownSource as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failures = 0
    overall = time.perf_counter()
    for name in names:
        started = time.perf_counter()
        try:
            directory, was_cached = ensure_table(name, tensor=args.tensor, tokens=args.tokens)
        except EXPECTED_ERRORS as exc:
            failures += 1
            print(f"{name}: FAILED: {exc}", file=sys.stderr)
            continue
        meta = json.loads((directory / "meta.json").read_text())
        status = "cached" if was_cached else f"built in {time.perf_counter() - started:.1f} s"
        print(f"{meta['name']:<26}{meta['V']:>7} x {meta['d']:<5} {status:<18}{directory}")
    total = time.perf_counter() - overall
    print(f"{len(names) - failures}/{len(names)} tables ready in {total:.1f} s; cache {cache_root()} "
          f"holds {_dir_size(cache_root()) / 1e6:.0f} MB")
    return 1 if failures else 0


def cmd_neighbours(args: argparse.Namespace) -> int:
    try:
        table = load_table(args.source)
    except EXPECTED_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UnknownSource) else 1
    exclude = () if args.all_classes else ("special", "byte", "punct")
    try:
        results = nearest_many(table, args.words, k=args.k, exclude=exclude)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({
            word: {"query": [table.tokens[i] for i in ids],
                   "neighbours": [{"token": n.token, "display": n.display, "cosine": round(n.cosine, 4)} for n in found]}
            for word, (ids, found) in results.items()
        }, ensure_ascii=False, indent=2))
        return 0
    print(f"{table.name} ({table.V} x {table.d}, {table.meta.get('tokenizer')})")
    for word, (ids, found) in results.items():
        query = " + ".join(table.tokens[i] for i in ids)
        print(f"  {word} [{query}]: " + ", ".join(f"{n.display} {n.cosine:.2f}" for n in found))
    return 0


def add_vocab_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``vocab`` and its subcommands on an argparse subparsers object."""
    vocab = subparsers.add_parser("vocab", help="token tables: list, fetch, neighbours",
                                  description="Token-embedding tables of pretrained language models.")
    sub = vocab.add_subparsers(dest="vocab_command", metavar="{list,fetch,neighbours}")
    sub.required = True

    listing = sub.add_parser("list", help="known sources, V x d, cached or not")
    listing.add_argument("--json", action="store_true", help="print a JSON list of objects")
    listing.set_defaults(func=cmd_list)

    fetch = sub.add_parser("fetch", help="download and convert a preset or source into the cache",
                           description="Targets: a preset (offline, paper, llm_heavy, offline:3), a source name, "
                                       "hf:ORG/NAME, or a path to a model folder, weights file or .npy.")
    fetch.add_argument("targets", nargs="+", metavar="PRESET_OR_SOURCE")
    fetch.add_argument("--tensor", help="embedding tensor name, when it cannot be recognised")
    fetch.add_argument("--tokens", help="tokens file for a bare .npy (one token per line, or a JSON list)")
    fetch.set_defaults(func=cmd_fetch)

    neighbours = sub.add_parser("neighbours", aliases=["neighbors"], help="nearest tokens to a word by cosine")
    neighbours.add_argument("source")
    neighbours.add_argument("words", nargs="+", metavar="WORD")
    neighbours.add_argument("-k", type=int, default=10, help="how many neighbours (default 10)")
    neighbours.add_argument("--all-classes", action="store_true",
                            help="also show special, byte and punctuation tokens")
    neighbours.add_argument("--json", action="store_true")
    neighbours.set_defaults(func=cmd_neighbours)
    return vocab


__all__ = ["add_vocab_parser", "cmd_fetch", "cmd_list", "cmd_neighbours"]
