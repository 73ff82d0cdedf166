"""Regression (issue 10, item 13): every damaged input file stops with exit code 2 and one message naming
the file, the line and the column or field, never a traceback."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metarec.cli import app

runner = CliRunner()
GOOD = {"reviewerID": "u1", "asin": "a1", "overall": 5.0, "unixReviewTime": 1_300_000_000, "summary": "ok"}


def _amazon(tmp_path: Path, lines: list[bytes], gz: bool = True) -> Path:
    body = b"\n".join(lines) + b"\n"
    path = tmp_path / ("r.json.gz" if gz else "r.json")
    path.write_bytes(gzip.compress(body) if gz else body)
    return path


def _line(**changes: object) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


def _run(kind: str, path: Path) -> str:
    res = runner.invoke(app, ["data", "info", kind, "--path", str(path)])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    return " ".join(res.output.split())  # rich wraps long lines


def test_truncated_gzip(tmp_path):
    path = _amazon(tmp_path, [_line()] * 200)
    path.write_bytes(path.read_bytes()[:-30])
    assert "damaged or truncated" in _run("amazon", path)


def test_gz_that_is_not_gzip(tmp_path):
    path = tmp_path / "r.json.gz"
    path.write_bytes(b'{"plain": "json"}\n')
    assert "damaged or truncated" in _run("amazon", path)


def test_non_utf8_line(tmp_path):
    path = _amazon(tmp_path, [_line(), b'{"reviewerID": "u2", "asin": "caf\xe9", "overall": 4}'])
    out = _run("amazon", path)
    assert "line 2 is not UTF-8" in out


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"unixReviewTime": "yesterday"}, "line 2, field 'unixReviewTime' must be a number"),
        ({"unixReviewTime": 1_300_000_000_000}, "milliseconds"),
        ({"overall": "five"}, "line 2, field 'overall' must be a number"),
        ({"overall": -1}, "must not be negative"),
        ({"overall": "inf"}, "must be a finite number"),
    ],
)
def test_bad_amazon_values(tmp_path, changes, needle):
    assert needle in _run("amazon", _amazon(tmp_path, [_line(), _line(**changes)]))


def test_deeply_nested_json(tmp_path):
    path = _amazon(tmp_path, [_line(), b"[" * 100_000 + b"]" * 100_000], gz=False)
    assert "line 2" in _run("amazon", path)


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        ("user_id,item_id,rating,timestamp\n", "no interactions"),
        ("user_id,item_id,rating,timestamp\n1,a,5,\n", "line 2, column 'timestamp' is empty"),
        ("user_id,item_id,rating,timestamp\n1,a,5,10\n1,b,inf,11\n", "line 3, column 'rating': inf must be a finite"),
        ("user_id,item_id,rating,timestamp\n1,a,-2,10\n", "line 2, column 'rating': -2.0 must not be negative"),
        ("user_id,item_id,rating,timestamp\n1,a,x,10\n", "line 2, column 'rating' is not a number"),
        ("user_id,item_id,rating,timestamp\n1,a,5,-5\n", "between 1970 and 2100"),
        ("user_id,item_id,rating,timestamp\n1,a,5,1300000000000\n", "milliseconds"),
    ],
)
def test_bad_csv_values(tmp_path, rows, needle):
    path = tmp_path / "i.csv"
    path.write_text(rows)
    out = _run("csv", path)
    assert str(path) in out.replace(" ", "") or "i.csv" in out
    assert needle in out


def test_csv_sep_and_encoding(tmp_path):
    """A semicolon-separated latin-1 file: the defaults fail with a hint, the options read it."""
    path = tmp_path / "i.csv"
    rows = ["user_id;item_id;rating;timestamp"] + [f"u{u};Caf\xe9 {i};4;{1_300_000_000 + u * 10 + i}"
                                                   for u in range(3) for i in range(4)]  # fmt: skip
    path.write_bytes(("\n".join(rows) + "\n").encode("latin-1"))
    out = _run("csv", path)
    assert "not valid utf-8" in out and "--encoding latin-1" in out
    res = runner.invoke(app, ["data", "info", "csv", "--path", str(path), "--encoding", "latin-1"])
    assert res.exit_code == 2 and "looks ';'-separated: pass --sep" in " ".join(res.output.split())
    res = runner.invoke(app, ["data", "info", "csv", "--path", str(path), "--encoding", "latin-1", "--sep", ";"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["interactions"] == 12
    tsv = tmp_path / "t.txt"
    tsv.write_text("\n".join(r.replace(";", "\t") for r in rows).replace("\xe9", "e") + "\n")
    res = runner.invoke(app, ["data", "info", "csv", "--path", str(tsv), "--sep", "\\t"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["data", "info", "csv", "--path", str(tsv), "--encoding", "no-such-codec"])
    assert res.exit_code == 2 and "unknown encoding" in " ".join(res.output.split())
    res = runner.invoke(app, ["data", "info", "ml-100k", "--sep", ";"])
    assert res.exit_code == 2 and "apply to csv" in " ".join(res.output.split())
