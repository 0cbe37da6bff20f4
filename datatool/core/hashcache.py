"""A persistent cache of perceptual hashes, keyed by the sha256 of an image file's bytes.

Near-duplicate grouping (`split --group-near-duplicates`) needs every image's perceptual hash,
and a hash needs a decode: about twice what `split` otherwise spends on an image, which only
passes its bytes through. Users run `validate`, `split` and `report` many times over the same
images, so each hash is computed once and kept here: `validate`'s image-health checks and
every `hash_images` call fill the cache, later runs read it.

- Key: the sha256 of the file's bytes (a copied, renamed or moved image is found again; an
  edited one is not) and `neardup.HASH_VERSION` (bumped whenever decoding or hashing changes,
  so no stale hash is ever read).
- Where: `$FACEKIT_CACHE_DIR`, else `$XDG_CACHE_HOME/facekit`, else `~/.cache/facekit`, in one
  SQLite file (`phash.sqlite3`). SQLite (standard library) rather than a file of our own: it is
  safe with several processes reading and writing at once and survives a crash mid-write.
  `FACEKIT_CACHE_DIR=off` turns the cache off.
- A cache that cannot be opened or written (read-only home, a corrupt file) is never an
  error: the hashes are then computed as if there were no cache.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Iterable, Mapping

CACHE_ENV = "FACEKIT_CACHE_DIR"
FILE_NAME = "phash.sqlite3"


def cache_dir() -> Path | None:
    """Where the cache lives (see module doc); None when `FACEKIT_CACHE_DIR=off`."""
    value = os.environ.get(CACHE_ENV)
    if value:
        return None if value.strip().lower() in ("off", "0", "none") else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "facekit"


class HashCache:
    """`get_many(sha256s)` -> `{sha256: phash}` of those known; `put_many({sha256: phash})`.

    Use as a context manager; every failure of the underlying file turns the cache into a no-op.
    """

    def __init__(self, version: str, directory: Path | None = None):
        self.version = version
        self._db: sqlite3.Connection | None = None
        directory = cache_dir() if directory is None else directory
        if directory is None:
            return
        try:
            directory.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(directory / FILE_NAME, timeout=10)
            db.execute("CREATE TABLE IF NOT EXISTS phash (sha256 TEXT NOT NULL, version TEXT NOT NULL, "
                       "hash TEXT NOT NULL, PRIMARY KEY (sha256, version)) WITHOUT ROWID")
            db.commit()
            self._db = db
        except (OSError, sqlite3.Error):
            self._db = None

    def __enter__(self) -> "HashCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def active(self) -> bool:
        return self._db is not None

    def get_many(self, digests: Iterable[str]) -> dict[str, int]:
        """The cached hashes of those `digests` (sha256 hex) that have one."""
        wanted = list(dict.fromkeys(digests))
        if self._db is None or not wanted:
            return {}
        found: dict[str, int] = {}
        try:
            for i in range(0, len(wanted), 500):  # SQLite caps the number of parameters of one query
                chunk = wanted[i:i + 500]
                rows = self._db.execute(
                    f"SELECT sha256, hash FROM phash WHERE version = ? AND sha256 IN ({','.join('?' * len(chunk))})",
                    (self.version, *chunk))
                found.update((d, int(h, 16)) for d, h in rows)
        except (sqlite3.Error, ValueError):
            self.close()
            return {}
        return found

    def put_many(self, hashes: Mapping[str, int]) -> None:
        """Store `{sha256 hex: phash}` (one transaction)."""
        if self._db is None or not hashes:
            return
        try:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO phash (sha256, version, hash) VALUES (?, ?, ?)",
                                     [(d, self.version, f"{int(h):016x}") for d, h in hashes.items()])
        except sqlite3.Error:
            self.close()

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None
