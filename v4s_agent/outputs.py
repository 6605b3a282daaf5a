"""Output folders of the CLIs (``--out``): atomic, and never losing files a run did not write.

Why: ``rollout``/``evaluate --out X`` used to replace ``X`` wholesale, deleting whatever a user kept
there. Now a run writes into a temporary sibling folder and, on success:

* ``X`` absent or empty: the folder is renamed onto ``X`` (atomic, as before);
* ``X`` holds only files an earlier run of ours wrote (listed in its ``.v4s_output.json``): replaced the
  same way (those files were ours to replace: a rerun into the same ``--out`` works);
* ``X`` holds anything else: refused (:class:`OutputDirError`) before any work is done, unless
  ``overwrite=True`` (``--overwrite``), which moves each new file into ``X`` with ``os.replace`` (each
  file atomic, the ``.v4s_output.json`` list last) and leaves every other file where it was.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

MARKER = ".v4s_output.json"


class OutputDirError(ValueError):
    """``--out`` cannot be used: a file is in the way, or it holds files this tool did not write."""


def _listed(path: Path) -> set[str] | None:
    """The files our marker in ``path`` lists, or None when there is no readable marker."""
    try:
        files = json.loads((path / MARKER).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {str(f) for f in files} if isinstance(files, list) else None


def _contents(path: Path) -> set[str]:
    """Every entry below ``path`` (files, links and empty folders), relative, except our marker."""
    out: set[str] = set()
    for p in path.rglob("*"):
        rel = p.relative_to(path).as_posix()
        if rel == MARKER:
            continue
        if p.is_dir() and not p.is_symlink():
            if not any(p.iterdir()):
                out.add(rel + "/")
        else:
            out.add(rel)
    return out


def foreign_entries(path: str | os.PathLike) -> list[str]:
    """Entries in ``path`` that no earlier run of ours wrote (empty for a missing or empty folder)."""
    path = Path(path)
    if not path.is_dir():
        return []
    ours = _listed(path) or set()
    return sorted(_contents(path) - ours)


def check_out_dir(path: str | os.PathLike, overwrite: bool = False, flag: str = "--out") -> Path:
    """Validate ``path`` as an output folder before any work is done; returns it resolved.

    Raises :class:`OutputDirError` when ``path`` or one of its parents is a file, or when it holds
    files we did not write and ``overwrite`` is False (the message says how to proceed)."""
    p = Path(path).expanduser().resolve()
    if p.exists() and not p.is_dir():
        raise OutputDirError(f"{flag} {str(path)!r} is a file, not a folder: choose a folder path")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputDirError(
                    f"{flag} {str(path)!r} lies under {str(parent)!r}, which is a file: choose a folder path"
                )
            break
    foreign = foreign_entries(p)
    if foreign and not overwrite:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputDirError(
            f"{flag} {str(path)!r} already holds files this tool did not write ({shown}); nothing is "
            f"deleted: choose an empty or new folder, or pass --overwrite to write this run's files into it "
            f"(other files are kept)"
        )
    return p


class AtomicDir:
    """Write into ``<parent>/.<name>.tmp-<pid>``; on success move it onto ``path`` (see the module
    docstring). ``overwrite``: also write into a folder holding foreign files, keeping them."""

    def __init__(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        self.path = Path(path).expanduser().resolve()
        self.overwrite = overwrite
        self.tmp = self.path.parent / f".{self.path.name}.tmp-{os.getpid()}"

    def __enter__(self) -> Path:
        check_out_dir(self.path, self.overwrite)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        written = sorted(_contents(self.tmp))
        foreign = foreign_entries(self.path)
        if not foreign:  # absent, empty or only our earlier output: swap the whole folder
            (self.tmp / MARKER).write_text(json.dumps({"files": written}, indent=1))
            if self.path.exists():
                old = self.path.parent / f".{self.path.name}.old-{os.getpid()}"
                self.path.rename(old)
                self.tmp.rename(self.path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                self.tmp.rename(self.path)
            return
        if not self.overwrite:  # foreign files appeared while we ran: keep both, delete nothing
            raise OutputDirError(
                f"{self.path} gained files this tool did not write while the run was going "
                f"({', '.join(foreign[:5])}); this run's output is kept in {self.tmp}"
            )
        keep = (_listed(self.path) or set()) | set(written)
        for rel in written:  # file by file, each atomic; foreign files stay
            src, dst = self.tmp / rel, self.path / rel
            if rel.endswith("/"):
                dst.mkdir(parents=True, exist_ok=True)
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_dir() and not dst.is_symlink():
                raise OutputDirError(f"{dst} is a folder; this run wanted to write a file there")
            os.replace(src, dst)
        marker_tmp = self.path / f"{MARKER}.tmp{os.getpid()}"
        marker_tmp.write_text(json.dumps({"files": sorted(keep)}, indent=1))
        os.replace(marker_tmp, self.path / MARKER)
        shutil.rmtree(self.tmp, ignore_errors=True)
