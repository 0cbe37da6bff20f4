"""The perceptual-hash cache: filled by validate and hash_images, read back by sha256 of the bytes,
harmless when off, unwritable or corrupt."""

from __future__ import annotations

import sqlite3

import pytest

from conftest import write_image, write_labelme_json
from datatool.core.hashcache import FILE_NAME, HashCache
from datatool.core.images import sha256_bytes
from datatool.core.neardup import HASH_VERSION, phash_image
from datatool.core.quality import hash_images


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("FACEKIT_CACHE_DIR", str(d))
    return d


def images(tmp_path, n=3):
    return [write_image(tmp_path / "ds" / "images" / f"im{i}.jpg", 96, 72, seed=i, box=(10 + i, 10, 50, 60))
            for i in range(n)]


def stored(cache_dir):
    with sqlite3.connect(cache_dir / FILE_NAME) as db:
        return {d: int(h, 16) for d, v, h in db.execute("SELECT sha256, version, hash FROM phash") if v == HASH_VERSION}


def test_hash_images_stores_each_hash_under_the_sha256_of_the_bytes(tmp_path, cache_dir):
    paths = images(tmp_path)
    hashes, issues = hash_images(paths)
    assert issues == []
    assert hashes == {str(p): phash_image(p) for p in paths}
    assert stored(cache_dir) == {sha256_bytes(p.read_bytes()): hashes[str(p)] for p in paths}


def test_a_cached_hash_is_read_instead_of_decoding_the_image(tmp_path, cache_dir):
    paths = images(tmp_path, 2)
    planted = 0x0123456789ABCDEF  # no decode gives this: seeing it proves the cache was read
    with HashCache(HASH_VERSION) as cache:
        cache.put_many({sha256_bytes(paths[0].read_bytes()): planted})
    hashes, _ = hash_images(paths)
    assert hashes[str(paths[0])] == planted
    assert hashes[str(paths[1])] == phash_image(paths[1])
    with HashCache("another-version") as cache:  # a new hashing version never reads old entries
        assert cache.get_many([sha256_bytes(paths[0].read_bytes())]) == {}


def test_validate_with_health_checks_fills_the_cache(tmp_path, cache_dir):
    from datatool.validate import validate

    paths = images(tmp_path)
    for p in paths:
        write_labelme_json(p, [(10, 10, 50, 60)], width=96, height=72)
    validate(tmp_path / "ds")
    assert set(stored(cache_dir)) == {sha256_bytes(p.read_bytes()) for p in paths}


def test_corrupt_or_disabled_cache_is_never_an_error(tmp_path, cache_dir, monkeypatch):
    paths = images(tmp_path, 2)
    cache_dir.mkdir()
    (cache_dir / FILE_NAME).write_bytes(b"not a database" * 100)
    hashes, issues = hash_images(paths)
    assert issues == [] and hashes == {str(p): phash_image(p) for p in paths}

    off = tmp_path / "off"
    monkeypatch.setenv("FACEKIT_CACHE_DIR", "off")
    assert hash_images(paths)[0] == hashes
    assert not off.exists()


def test_undecodable_image_is_reported_and_not_cached(tmp_path, cache_dir):
    paths = images(tmp_path, 1)
    bad = tmp_path / "ds" / "images" / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    hashes, issues = hash_images([paths[0], bad, tmp_path / "missing.jpg"])
    assert list(hashes) == [str(paths[0])]
    assert [(i.file, i.code) for i in issues] == [(str(bad), "bad-image"), (str(tmp_path / "missing.jpg"), "bad-image")]
    assert "image not found" in issues[1].message
    assert sha256_bytes(bad.read_bytes()) not in stored(cache_dir)
