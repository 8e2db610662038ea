"""The scan that lets Spark split a CSV across cores when no quoted field holds a line break."""

from __future__ import annotations

from pathlib import Path

import pytest

from salesflow.spark.read import needs_multiline

HEADER = "product_id,product_name,product_price,store_id,store_name,quantity,date\n"


def _file(tmp_path: Path, body: str, name: str = "sales.csv") -> Path:
    path = tmp_path / name
    path.write_bytes((HEADER + body).encode("utf-8"))
    return path


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("p1,TV,3,s1,Shop,5,2020-01-02\n", False),
        ('p1,"Big, ""new"" TV",3,s1,"Shop",5,2020-01-02\n', False),
        ("p1,TV,3,s1,Shop,5,2020-01-02\r\np2,TV,3,s1,Shop,5,2020-01-02\r\n", False),
        ('p1,"Big\nTV",3,s1,Shop,5,2020-01-02\n', True),
        ('p1,"Big\r\nTV",3,s1,Shop,5,2020-01-02\r\n', True),
        ('p1,"say ""hi""\nthere",3,s1,Shop,5,2020-01-02\n', True),
        ("p1,TV,3,s1,Sh\rop,5,2020-01-02\n", True),  # a bare CR
        ('p1,"never closed,3,s1,Shop,5,2020-01-02', True),
    ],
)
def test_verdict(tmp_path: Path, body: str, expected: bool) -> None:
    assert needs_multiline(_file(tmp_path, body)) is expected


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7, 64])
def test_verdict_does_not_depend_on_where_chunks_split(tmp_path: Path, chunk_size: int) -> None:
    """Quote state and CRLF pairs carry across chunk boundaries."""
    plain = _file(tmp_path, 'p1,"a ""b"" c",3,s1,Shop,5,2020-01-02\r\n' * 3, "plain.csv")
    broken = _file(tmp_path, 'p1,"a,b",3,s1,"x\ny",5,2020-01-02\r\n', "broken.csv")
    assert needs_multiline(plain, chunk_size=chunk_size) is False
    assert needs_multiline(broken, chunk_size=chunk_size) is True


def test_verdict_follows_a_rewritten_file(tmp_path: Path) -> None:
    """The cache is keyed by size and mtime: a new version of the file is scanned again."""
    path = _file(tmp_path, "p1,TV,3,s1,Shop,5,2020-01-02\n")
    assert needs_multiline(path) is False
    path.write_bytes((HEADER + 'p1,"T\nV",3,s1,Shop,5,2020-01-02\n').encode())
    assert needs_multiline(path) is True
