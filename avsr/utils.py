"""Small helpers shared across the package (no torch, no codecs)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Sequence


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    A crash or exception leaves ``path`` untouched (the old file, or nothing),
    never half-written. The temporary file keeps the target's suffix (or
    ``suffix``) so writers that choose a format by extension still work.

    Example:
        >>> import numpy as np, tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> with atomic_path(os.path.join(d, "x.npy")) as tmp:
        ...     np.save(tmp, np.zeros(3))
        >>> os.listdir(d)
        ['x.npy']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix, dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp_path
        # mkstemp creates 0600 files (and some writers, safetensors among them, make theirs 0600
        # anew): give the result the permissions a plain open() would
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def save_npz_atomic(path: str | os.PathLike, **arrays: object) -> None:
    """``np.savez_compressed`` to ``path`` atomically."""
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def save_csv_atomic(
    path: str | os.PathLike,
    rows: Iterable[dict],
    fieldnames: Sequence[str],
    *,
    extrasaction: str = "raise",
) -> None:
    """Write dict rows to a CSV file atomically (header first).

    Args:
        path: output ``.csv``.
        rows: the rows, written in order.
        fieldnames: the columns, in order.
        extrasaction: what :class:`csv.DictWriter` does with keys not in
            ``fieldnames``: ``"raise"`` or ``"ignore"``.
    """
    import csv

    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(fieldnames), extrasaction=extrasaction)
            writer.writeheader()
            writer.writerows(rows)


def markdown_table(
    rows: list[dict],
    header: str = "",
    *,
    titles: dict[str, str] | None = None,
    formats: dict[str, str] | None = None,
    right: tuple[str, ...] = (),
) -> str:
    """Render rows (dicts with the same keys) as a markdown table.

    Args:
        rows: one dict a row; the first row's keys are the columns, in order.
        header: text put above the table (followed by a blank line), if any.
        titles: column titles by key (default: the key itself).
        formats: format specs by key, e.g. ``{"seconds": ".2f"}``.
        right: keys of right-aligned (numeric) columns.

    Example:
        >>> print(markdown_table([{"name": "a", "fps": 12.345}], formats={"fps": ".1f"}, right=("fps",)), end="")
        | name | fps |
        |---|---:|
        | a | 12.3 |
    """
    titles, formats = titles or {}, formats or {}
    keys = list(rows[0]) if rows else []
    lines = [header, ""] if header else []
    lines.append("| " + " | ".join(titles.get(k, k) for k in keys) + " |")
    lines.append("|" + "".join("---:|" if k in right else "---|" for k in keys))
    for r in rows:
        lines.append("| " + " | ".join(format(r[k], formats.get(k, "")) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def save_table(
    out_dir: str | os.PathLike, name: str, markdown: str, rows: Sequence[dict], columns: Sequence[str] | None = None
) -> tuple[Path, Path]:
    """Save a results table as ``OUT/NAME.md`` (the markdown) and ``OUT/NAME.csv`` (the rows).

    Both writes are atomic (UTF-8). Used by the scripts in ``tools/benchmarks``
    and the evaluation commands.

    Args:
        out_dir: the folder (created).
        name: the file stem.
        markdown: the table as markdown (a final newline is added if missing).
        rows: the CSV rows.
        columns: the CSV columns, in order (default: the first row's keys).

    Returns:
        The paths of the markdown and CSV files.
    """
    out = Path(out_dir)
    md_path, csv_path = out / f"{name}.md", out / f"{name}.csv"
    with atomic_path(md_path) as tmp:
        tmp.write_text(markdown if markdown.endswith("\n") else markdown + "\n", encoding="utf-8")
    save_csv_atomic(csv_path, rows, columns if columns is not None else (list(rows[0]) if rows else []))
    return md_path, csv_path
