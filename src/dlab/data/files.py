"""Reading a user's text files strictly: a wrong encoding, an empty file or a ragged row is named."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
from pathlib import Path

from dlab.errors import DataError


def read_text(path: str | Path, encoding: str = "utf-8", allow_empty: bool = False) -> str:
    """A whole (optionally gzipped) text file, decoded strictly."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a text file") from None
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: not a complete gzip file ({exc})") from None
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DataError(f"data.encoding: unknown encoding '{encoding}'") from None
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: not valid {encoding} at byte {exc.start} (line {line}); set data.encoding, e.g. latin-1"
        ) from None
    if not text.strip() and not allow_empty:
        raise DataError(f"{path}: the file is empty")
    return text.removeprefix("\ufeff")


def read_lines(path: str | Path, encoding: str = "utf-8") -> list[str]:
    """Lines of a text file without their line endings (a final newline adds no empty line)."""
    return read_text(path, encoding).splitlines()


def read_table(
    path: str | Path, encoding: str = "utf-8", delimiter: str | None = None
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV/TSV file; every row must have as many cells as the header."""
    path = Path(path)
    text = read_text(path, encoding)
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable table ({exc})") from None
    rows = [r for r in rows if r]  # blank lines
    header, body = [h.strip() for h in rows[0]], rows[1:]
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(
                f"{path}: row {number} has {len(row)} cells but the header has {len(header)} ({', '.join(header)})"
            )
    if not body:
        raise DataError(f"{path}: a header but no rows")
    return header, body


def column(header: list[str], name: str, path: str | Path, field: str) -> int:
    """The index of column `name`, or a DataError naming the columns there are."""
    from dlab.errors import did_you_mean

    if name in header:
        return header.index(name)
    raise DataError(
        f"{field}: {path} has no column '{name}'{did_you_mean(name, header)}; columns: {', '.join(header)}"
    )
