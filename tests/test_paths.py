"""The one JSON cache writer: atomic, and safe when several processes write at once."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from edgespec.paths import read_json, write_json


def test_write_json_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cache.json"
    assert read_json(path) == {}
    write_json(path, {"a": 1})
    write_json(path, {"b": [1, 2]})
    assert read_json(path) == {"b": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["cache.json"]


def test_read_json_takes_a_broken_or_foreign_file_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    path.write_text("{half")
    assert read_json(path) == {}
    path.write_text("[1, 2]")
    assert read_json(path) == {}


def test_concurrent_writers_never_collide(tmp_path: Path) -> None:
    # A fixed temporary name lets one writer rename the other's half-written file, or find its
    # own already renamed away (FileNotFoundError). Unique names make every write whole.
    path = tmp_path / "cache.json"
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(200):
                write_json(path, {"writer": n, "i": i, "pad": "x" * 10_000})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert json.loads(path.read_text())["i"] == 199
    assert [p.name for p in tmp_path.iterdir()] == ["cache.json"]
