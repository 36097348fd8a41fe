"""Where a store's data comes from: a canonical folder, UCI Online Retail's files or the Ta-Feng file.

``tailor import`` (and ``tailor demo``) call ``import_source``; it tells the kind of source by its shape,
converts a public dataset to the canonical format under the data dir once (a marker in the store skips the
conversion while the source file is unchanged), and imports the folder all or nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tailor.core.errors import DataError
from tailor.data import tafeng, uci
from tailor.data.importer import ImportReport, import_dir
from tailor.data.store import Store

__all__ = [
    "DEMO_SOURCE",
    "Destination",
    "import_folder",
    "import_source",
    "import_tafeng",
    "import_uci",
    "release_memory",
]

_ROOT = Path(__file__).resolve().parents[2]
# The demo store: the retailer's two years, Online Retail II's 2009-2010 sheet, then Online Retail.
DEMO_SOURCE: tuple[Path, ...] = (
    _ROOT / "data" / "raw" / "online_retail_ii_2009_2010.parquet",
    _ROOT / "data" / "raw" / "online_retail.parquet",
)


@dataclass(frozen=True)
class Destination:
    """The store an import writes, the folder its canonical files go to, and the retailer's currency (a
    price in another currency is refused rather than shown with the wrong sign)."""

    store: Store
    data_dir: Path
    currency: str


_MARKERS = ("uci_source", "tafeng_source")


def _stamp(path: Path) -> str:
    return f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}"


def _convert_once(
    where: Destination, source: str, marker: str, convert: Callable[[Path], object], force: bool
) -> Path:
    """The canonical folder under the data dir, converted from ``source`` unless the store's marker says it
    already holds that very file (same path, size, time and customer limit)."""
    out = where.data_dir / "canonical"
    if force or where.store.get_meta(source) != marker or not (out / "items.jsonl").exists():
        convert(out)
        where.store.set_meta(source, marker)
        # The folder holds one source at a time: another's marker left behind would skip that source's
        # next conversion, and a UCI marker would make the ranking eval take this store for UCI Online
        # Retail (and its reference cut).
        for other in _MARKERS:
            if other != source:
                where.store.set_meta(other, None)
        release_memory()
    return out


def import_folder(where: Destination, directory: Path, *, force: bool = False) -> ImportReport:
    """A canonical folder, checked whole and then written in one go (``tailor.data.importer``)."""
    try:
        return import_dir(where.store, directory, force=force, currency=where.currency)
    finally:
        release_memory()


def import_uci(
    where: Destination,
    parquet: Path | Sequence[Path] = DEMO_SOURCE,
    *,
    customers_limit: int | None = None,
    force: bool = False,
) -> ImportReport:
    """Convert UCI Online Retail to the canonical format under the data dir, then import it.

    Several files (Online Retail II's 2009-2010 year beside Online Retail) make one history."""
    paths = [parquet] if isinstance(parquet, Path) else list(parquet)
    for path in paths:
        if not path.exists():
            raise DataError(f"{path} does not exist", hint="pass the path of online_retail.parquet")
    marker = ";".join(_stamp(p) for p in paths) + f":{customers_limit}"
    out = _convert_once(
        where,
        "uci_source",
        marker,
        lambda out: uci.convert(paths, out, customers_limit=customers_limit),
        force,
    )
    return import_folder(where, out, force=force)


def import_tafeng(
    where: Destination, path: Path, *, customers_limit: int | None = None, force: bool = False
) -> ImportReport:
    """Convert the Ta-Feng grocery file (.csv.zip or .csv) to the canonical format under the data dir,
    then import it. Its clock is historical: set TAILOR_NOW to the morning after its last day."""
    if not path.exists():
        raise DataError(f"{path} does not exist", hint="pass the path of ta_feng.csv.zip")
    marker = f"{_stamp(path)}:{customers_limit}"
    out = _convert_once(
        where,
        "tafeng_source",
        marker,
        lambda out: tafeng.convert(path, out, customers_limit=customers_limit),
        force,
    )
    return import_folder(where, out, force=force)


def import_source(
    where: Destination, sources: Sequence[Path], *, customers_limit: int | None = None, force: bool = False
) -> ImportReport:
    """``tailor import``: a canonical folder, UCI Online Retail .parquet files, or the Ta-Feng file
    (.csv.zip or .csv, told by its columns). Nothing given: the demo store."""
    paths = list(sources) or list(DEMO_SOURCE)
    if len(paths) > 1 and any(p.suffix != ".parquet" for p in paths):
        raise DataError(
            "several sources must all be UCI .parquet files", hint="import one canonical folder at a time"
        )
    path = paths[0]
    if path.suffix == ".parquet":
        return import_uci(where, paths, customers_limit=customers_limit, force=force)
    if not path.exists():
        raise DataError(
            f"{path} does not exist",
            hint="pass a canonical folder, UCI .parquet files or the Ta-Feng .csv.zip",
        )
    if path.is_dir():
        if customers_limit is not None:
            raise DataError(
                "--customers-limit keeps the busiest customers of a UCI or Ta-Feng file",
                hint="a canonical folder is imported as it is: leave the option out",
            )
        return import_folder(where, path, force=force)
    if path.suffix.lower() not in (".csv", ".zip"):
        raise DataError(
            f"{path}: Tailor does not import {path.suffix or 'extension-less'} files",
            hint="pass a canonical folder, UCI .parquet files or the Ta-Feng .csv.zip",
        )
    columns = tafeng.read_header(path)
    if tafeng.is_tafeng(columns):
        return import_tafeng(where, path, customers_limit=customers_limit, force=force)
    canonical = path.stem.split(".")[0] in ("items", "customers", "events")
    raise DataError(
        f"{path} is not a file Tailor knows: its columns are {columns[:10]}",
        hint=(
            "a canonical items/customers/events .csv goes in a folder: pass the folder"
            if canonical
            else f"the Ta-Feng file's columns are {', '.join(tafeng.COLUMNS)}"
        ),
    )


def release_memory() -> None:
    """Hand the pages of an import's dead frames back to the OS.

    Conversion and import build large pandas frames that are garbage once they return, but glibc keeps the
    freed pages in its arenas; without a trim, the index step's peak (model, ranker fit) stacks on top of
    the import's in the one process ``tailor demo`` runs, and the demo's peak RSS goes over 2 GB.
    """
    gc.collect()
    arrow = sys.modules.get("pyarrow")
    if arrow is not None:
        # Arrow buffers live in Arrow's own allocator pool, which a glibc trim does not reach.
        arrow.default_memory_pool().release_unused()
    # Not glibc (musl, macOS): nothing to trim.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
