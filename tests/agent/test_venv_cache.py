"""The venv cache: keys, complete-only hits, LRU and free-space eviction, crash and race safety."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from bosun.agent.requirements import Requirements
from bosun.agent.venv_cache import MARKER, VenvCache, cache_key

PY = "CPython 3.11.7 (main, May  9 2026) [GCC 12.2.0]"


def _fake_build(path: Path) -> None:
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python").write_text("fake")


def _cache(tmp_path: Path, **kwargs: object) -> VenvCache:
    settings: dict = {"max_entries": 10, "free_space_threshold_gb": 0.0, "enabled": True}
    settings.update(kwargs)
    return VenvCache(tmp_path / "cache", **settings)


def test_key_depends_on_what_goes_into_the_venv(tmp_path: Path) -> None:
    six = Requirements("task", ["six==1.16.0"], None)
    base = cache_key(PY, "uv", six)
    assert base == cache_key(PY, "uv", Requirements("task", ["six==1.16.0"], None))
    assert len(base) == 64
    assert cache_key(PY, "uv", Requirements("task", ["six==1.15.0"], None)) != base
    assert cache_key(PY, "pip", six) != base
    assert cache_key(PY.replace("3.11.7", "3.11.8"), "uv", six) != base
    assert cache_key(PY, "uv", six, ["system_site_packages=True"]) != base
    assert cache_key(PY, "uv", Requirements("file", ["six==1.16.0"], None)) != base


def test_project_key_follows_lock_and_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\n')
    project = Requirements("project", [], tmp_path)
    first = cache_key(PY, "uv", project)
    (tmp_path / "uv.lock").write_text("version = 1\n")
    with_lock = cache_key(PY, "uv", project)
    (tmp_path / "uv.lock").write_text("version = 1\n# changed\n")
    changed_lock = cache_key(PY, "uv", project)
    assert len({first, with_lock, changed_lock}) == 3
    assert cache_key(PY, "uv", project) == changed_lock


def test_included_requirement_files_are_part_of_the_key(tmp_path: Path) -> None:
    (tmp_path / "base.txt").write_text("six\n")
    reqs = Requirements("file", ["-r base.txt", "tomli"], tmp_path)
    first = cache_key(PY, "uv", reqs)
    (tmp_path / "base.txt").write_text("six==1.16.0\n")
    assert cache_key(PY, "uv", reqs) != first


def test_store_then_lookup(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    assert cache.lookup("k1") is None
    path = cache.store("k1", _fake_build)
    assert path == cache.root / "k1"
    assert (path / MARKER).is_file()
    assert cache.lookup("k1") == path
    # a second store is a no-op: the build is not run again
    assert cache.store("k1", lambda p: pytest.fail("rebuilt a complete entry")) == path


def test_disabled_cache_never_hits(tmp_path: Path) -> None:
    cache = _cache(tmp_path, enabled=False)
    assert cache.lookup("k1") is None
    assert cache.evict() == []
    with pytest.raises(RuntimeError):
        cache.store("k1", _fake_build)


def test_lru_eviction_beyond_max_entries(tmp_path: Path) -> None:
    cache = _cache(tmp_path, max_entries=2)
    cache.store("a", _fake_build)
    cache.store("b", _fake_build)
    assert cache.lookup("a") is not None  # a is now more recently used than b
    cache.store("c", _fake_build)
    assert sorted(key for _, key in cache.entries()) == ["a", "c"]
    assert not (cache.root / "b").exists()
    assert cache.lookup("b") is None
    cache.store("d", _fake_build)  # c was used after a
    assert sorted(key for _, key in cache.entries()) == ["c", "d"]


def test_free_space_threshold_evicts_oldest_but_keeps_the_new_entry(tmp_path: Path) -> None:
    cache = _cache(tmp_path, free_space_threshold_gb=10.0**9)  # never enough
    cache.store("a", _fake_build)
    cache.store("b", _fake_build)
    assert [key for _, key in cache.entries()] == ["b"]


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    cache = _cache(tmp_path)

    def broken(path: Path) -> None:
        _fake_build(path)
        raise ValueError("installer died")

    with pytest.raises(ValueError):
        cache.store("k1", broken)
    assert not (cache.root / "k1").exists()
    assert cache.lookup("k1") is None


def test_interrupted_build_is_not_a_hit_and_is_rebuilt(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    half = cache.root / "k1"
    _fake_build(half)
    (half / "half-written").write_text("x")  # a crash before the marker
    assert cache.lookup("k1") is None
    built: list[Path] = []

    def build(path: Path) -> None:
        built.append(path)
        _fake_build(path)

    path = cache.store("k1", build)
    assert built == [half]
    assert not (path / "half-written").exists()
    assert cache.lookup("k1") == path


def test_evict_removes_abandoned_builds(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    _fake_build(cache.root / "crashed")
    assert cache.evict() == ["crashed"]
    assert not (cache.root / "crashed").exists()


def test_concurrent_builders_of_one_key_build_once(tmp_path: Path) -> None:
    cache_a, cache_b = _cache(tmp_path), _cache(tmp_path)  # as two agents would
    builds: list[str] = []
    waited = threading.Event()
    started = threading.Event()

    def slow_build(path: Path) -> None:
        builds.append(threading.current_thread().name)
        started.set()
        time.sleep(0.5)
        _fake_build(path)

    results: dict[str, Path] = {}

    def first() -> None:
        results["a"] = cache_a.store("k1", slow_build)

    def second() -> None:
        started.wait(5)
        results["b"] = cache_b.store("k1", slow_build, on_wait=waited.set)

    threads = [threading.Thread(target=first, name="a"), threading.Thread(target=second, name="b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert builds == ["a"]
    assert waited.is_set()
    assert results["a"] == results["b"] == cache_a.root / "k1"
    assert (results["a"] / MARKER).is_file()


def test_evict_skips_an_entry_being_built(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    inside = threading.Event()
    release = threading.Event()

    def blocked_build(path: Path) -> None:
        _fake_build(path)
        inside.set()
        release.wait(5)

    thread = threading.Thread(target=lambda: cache.store("busy", blocked_build))
    thread.start()
    assert inside.wait(5)
    assert _cache(tmp_path).evict() == []  # another agent's sweep
    assert (cache.root / "busy").exists()
    release.set()
    thread.join(5)
    assert cache.lookup("busy") is not None
