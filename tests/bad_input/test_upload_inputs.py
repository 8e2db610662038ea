"""Bad input at the upload service, one case per test: the status, the error code, and what was kept.

A refusal keeps nothing (no object, not even a temp file; no upload row; no outbox event). An
accepted file is stored byte for byte under uploads/<id>.csv, and its preview, stored with the
row, says what the Spark job will make of it. Line numbers are physical lines (header = line 1).
"""

from __future__ import annotations

import gzip
import io
import random
import zipfile
from typing import Any

import pytest
from fastapi.testclient import TestClient

from salesflow.auth import auth_headers
from salesflow.config import Settings
from salesflow.services.upload.app import create_app
from tests.bad_input.helpers import (
    HEADER,
    assert_kept,
    assert_refused,
    objects_root,
    post,
    row,
    stored_files,
)
from tests.conftest import free_port

GOOD = HEADER + row("1") + row("2", store="8") + row("3", quantity="5", date="2024-02-01")

# --- the header and the shape of the file -----------------------------------------------------


def test_empty_file(client: TestClient, upload_settings: Settings) -> None:
    response = post(client, b"")
    assert_refused(response, upload_settings, 400, "bad_header", "the file is empty")


@pytest.mark.parametrize("content", [HEADER, HEADER.rstrip(b"\n"), HEADER + b"\n\n"])
def test_header_only(client: TestClient, upload_settings: Settings, content: bytes) -> None:
    response = post(client, content)
    assert_refused(response, upload_settings, 400, "no_rows", "header but no data rows")


def test_missing_columns_are_named(client: TestClient, upload_settings: Settings) -> None:
    response = post(client, b"product_id,store_id,qty,date\n1,7,3,2024-01-01\n")
    message = assert_refused(response, upload_settings, 400, "bad_header")
    assert "missing column(s): product_name, product_price, store_name, quantity;" in message
    assert "the header has: product_id, store_id, qty, date" in message


def test_extra_columns_are_accepted_and_listed(
    client: TestClient, upload_settings: Settings
) -> None:
    content = HEADER.rstrip(b"\n") + b",region,promo\n" + row().rstrip(b"\n") + b",north,yes\n"
    preview = assert_kept(post(client, content), client, upload_settings, content)
    assert preview["extra_columns"] == ["region", "promo"]
    assert preview["columns"][-2:] == ["region", "promo"]
    assert (preview["rows"], preview["rejected"]) == (1, {})


@pytest.mark.parametrize(("sep", "name"), [("\t", "tab"), (";", "semicolon")])
def test_tab_and_semicolon_delimiters(
    client: TestClient, upload_settings: Settings, sep: str, name: str
) -> None:
    content = HEADER.replace(b",", sep.encode()) + row("1", sep=sep) + row("2", sep=sep)
    preview = assert_kept(post(client, content), client, upload_settings, content)
    assert preview["delimiter"] == name
    assert (preview["rows"], preview["products"], preview["rejected"]) == (2, 2, {})


def test_bom(client: TestClient, upload_settings: Settings) -> None:
    content = b"\xef\xbb\xbf" + GOOD
    preview = assert_kept(post(client, content), client, upload_settings, content)
    assert preview["has_bom"] is True
    assert preview["columns"][0] == "product_id"  # not "\ufeffproduct_id"
    assert (preview["rows"], preview["rejected"]) == (3, {})


def test_crlf(client: TestClient, upload_settings: Settings) -> None:
    content = GOOD.replace(b"\n", b"\r\n")
    preview = assert_kept(post(client, content), client, upload_settings, content)
    assert (preview["lines"], preview["rows"], preview["rejected"]) == (4, 3, {})
    assert (preview["date_min"], preview["date_max"]) == ("2024-01-01", "2024-02-01")


def test_quoted_fields_with_delimiters_and_newlines(
    client: TestClient, upload_settings: Settings
) -> None:
    content = (
        HEADER
        + row("1", name='"Widget, large"')
        + row("2", name='"two\nline name"')  # lines 3 and 4
        + row("3", name='"say ""hi"""', quantity="many")  # line 5: its line number is right
    )
    preview = assert_kept(post(client, content), client, upload_settings, content)
    assert (preview["lines"], preview["rows"]) == (5, 3)
    assert preview["rejected"] == {"bad_quantity": 1}
    assert preview["first_rejected_lines"] == {"bad_quantity": [5]}


def test_unterminated_quote_names_its_line(client: TestClient, upload_settings: Settings) -> None:
    content = HEADER + row("1") + row("2", name='"open name') + row("3") + row("4")
    response = post(client, content)
    assert_refused(
        response,
        upload_settings,
        400,
        "unterminated_quote",
        "quote opened on line 3 is never closed",
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("x" * 5000, "line 3: a field of 5000 bytes is over the limit of 4096 bytes"),
        ('"' + "é" * 2100 + '"', "line 3: a field of 4200 bytes is over the limit of 4096 bytes"),
        ('"' + "x" * 40_000, "line 3: a quoted field runs past the limit of 4096 bytes"),
    ],
    ids=["plain", "quoted-multibyte", "quote-never-closed"],
)
def test_field_over_the_limit(
    client: TestClient, upload_settings: Settings, name: str, expected: str
) -> None:
    content = HEADER + row("1") + row("2", name=name) + row("3")
    assert_refused(post(client, content), upload_settings, 400, "field_too_long", expected)


def test_non_utf8_bytes_report_their_offset(client: TestClient, upload_settings: Settings) -> None:
    bad_line = "2,Caf\xe9,2.50,7,Main St,3,2024-01-01\n".encode("latin-1")
    content = HEADER + row("1") + bad_line + row("3")
    offset = len(HEADER) + len(row("1")) + len(b"2,Caf")
    response = post(client, content)
    assert_refused(
        response,
        upload_settings,
        400,
        "not_utf8",
        f"invalid UTF-8 at byte offset {offset} (line 3)",
    )


def test_non_utf8_deep_in_a_large_file_aborts_the_writer(
    client: TestClient, upload_settings: Settings
) -> None:
    """The error comes after the first 1 MiB batch was written: the temp object goes too."""
    good_rows = row("1") * 40_000  # ~1.4 MiB
    content = HEADER + good_rows + b"9,\xff,1,7,s,1,2024-01-01\n"
    offset = len(HEADER) + len(good_rows) + 2
    response = post(client, content)
    assert_refused(response, upload_settings, 400, "not_utf8", f"byte offset {offset} (line 40002)")


# --- row values: accepted, and counted in the preview --------------------------------------------


def test_bad_quantities_are_counted_with_their_lines(
    client: TestClient, upload_settings: Settings
) -> None:
    quantities = ["3", "abc", "-2", "", "1.5", "NaN", " 4 ", "1e999"]
    content = HEADER + b"".join(row(str(i), quantity=q) for i, q in enumerate(quantities))
    preview = assert_kept(post(client, content), client, upload_settings, content)
    assert preview["rows"] == 8
    assert preview["rejected"] == {
        "bad_quantity": 3,
        "missing_quantity": 1,
        "negative_quantity": 1,
    }
    assert preview["first_rejected_lines"] == {
        "bad_quantity": [3, 7, 9],
        "missing_quantity": [5],
        "negative_quantity": [4],
    }


def test_both_accepted_date_formats_mixed(client: TestClient, upload_settings: Settings) -> None:
    content = (
        HEADER
        + row("1", date="2024-01-05")
        + row("2", date="2024-03-01 13:45:00")
        + row("3", date="2023-12-31 00:00:00")
    )
    preview = assert_kept(post(client, content), client, upload_settings, content)
    assert preview["rejected"] == {}
    assert (preview["date_min"], preview["date_max"]) == ("2023-12-31", "2024-03-01")


def test_unparsable_dates_are_bad_date(client: TestClient, upload_settings: Settings) -> None:
    dates = ["2024-01-05", "01/02/2024", "2024-13-01", "yesterday", "2024-1-5", "2024-02-30"]
    content = HEADER + b"".join(row(str(i), date=d) for i, d in enumerate(dates))
    preview = assert_kept(post(client, content), client, upload_settings, content)
    assert preview["rejected"] == {"bad_date": 5}
    assert preview["first_rejected_lines"] == {"bad_date": [3, 4, 5, 6, 7]}
    assert (preview["date_min"], preview["date_max"]) == ("2024-01-05", "2024-01-05")


def test_missing_ids_come_before_other_reasons(
    client: TestClient, upload_settings: Settings
) -> None:
    content = (
        HEADER
        + row("1", store=" ", quantity="x")  # missing_store_id wins over bad_quantity
        + row("", date="never")  # missing_product_id wins over bad_date
        + b"4,short,row\n"
        + row("5")  # one usable row: a file of rejects only is refused (tests below)
    )
    preview = assert_kept(post(client, content), client, upload_settings, content)
    assert preview["first_rejected_lines"] == {
        "missing_store_id": [2],
        "missing_product_id": [3],
        "wrong_field_count": [4],
    }


def test_duplicate_rows_are_counted(client: TestClient, upload_settings: Settings) -> None:
    content = HEADER + row("1") * 3 + row("2") + row("2") + row("3")
    preview = assert_kept(post(client, content), client, upload_settings, content)
    assert (preview["rows"], preview["duplicate_rows"], preview["bounded"]) == (6, 3, [])


# --- not a CSV text file ------------------------------------------------------------------------


def test_gzip_is_415(client: TestClient, upload_settings: Settings) -> None:
    response = post(client, gzip.compress(GOOD), name="sales.csv.gz")
    assert_refused(
        response,
        upload_settings,
        415,
        "unsupported_media_type",
        "compressed files are not accepted (gzip detected); upload the CSV itself",
    )


def test_zip_is_415(client: TestClient, upload_settings: Settings) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("sales.csv", GOOD)
    response = post(client, buffer.getvalue(), name="sales.zip")
    assert_refused(response, upload_settings, 415, "unsupported_media_type", "(zip detected)")


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), "control 0x1a byte"),
        (b"\x00" + random.Random(7).randbytes(4096), "NUL byte"),
    ],
    ids=["png", "random-bytes"],
)
def test_binary_file_named_csv_is_415(
    client: TestClient, upload_settings: Settings, content: bytes, detail: str
) -> None:
    response = post(client, content, name="sales.csv")
    assert_refused(response, upload_settings, 415, "unsupported_media_type", "looks binary", detail)


# --- size and names -----------------------------------------------------------------------------


def test_over_the_size_limit_is_413_while_streaming(settings: Settings) -> None:
    """Sent in 8 kB pieces without a Content-Length: the service stops reading at the limit."""
    small = settings.model_copy(
        update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}", "max_upload_bytes": 50_000}
    )
    boundary = "bad-input-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
        ).encode()
        + HEADER
        + row() * 20_000
        + f"\r\n--{boundary}--\r\n".encode()
    )
    pieces = [body[i : i + 8192] for i in range(0, len(body), 8192)]
    read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        more = read < len(pieces)
        return {"type": "http.request", "body": pieces[read - 1], "more_body": more}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [
        (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
        *((k.lower().encode(), v.encode()) for k, v in auth_headers(small).items()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/uploads",
        "raw_path": b"/uploads",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    with TestClient(create_app(small)) as client:
        app: Any = client.app
        client.portal.call(app, scope, receive, send)  # type: ignore[union-attr]
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert b'"too_large"' in sent[1]["body"] and b"50000 bytes" in sent[1]["body"]
    assert read <= 50_000 // 8192 + 2 < len(pieces)  # refused at the limit, not at the end
    assert stored_files(small) == []


def test_path_in_filename_is_metadata_only(client: TestClient, upload_settings: Settings) -> None:
    response = post(client, GOOD, name="../../x.csv")
    assert_kept(response, client, upload_settings, GOOD)
    assert response.json()["filename"] == "x.csv"
    assert not (upload_settings.data_dir / "x.csv").exists()
    assert not (objects_root(upload_settings).parent.parent / "x.csv").exists()


def test_10_kb_filename_is_truncated(client: TestClient, upload_settings: Settings) -> None:
    response = post(client, GOOD, name="n" * 10_000 + ".csv")
    assert_kept(response, client, upload_settings, GOOD)
    assert response.json()["filename"] == "n" * 255
    assert client.get("/uploads").json()["uploads"][0]["filename"] == "n" * 255


# --- every row would be rejected: refused at once, with a hint ----------------------------------


def test_day_first_dates_everywhere_are_refused_with_a_hint(
    client: TestClient, upload_settings: Settings
) -> None:
    content = HEADER + b"".join(row(str(i), date=f"{i + 10:02d}/01/2024") for i in range(5))
    message = assert_refused(post(client, content), upload_settings, 400, "all_rows_rejected")
    assert "every row would be rejected (bad_date 5)" in message
    assert "dates look like DD/MM/YYYY (e.g. '10/01/2024'); write them as YYYY-MM-DD" in message


def test_decimal_commas_everywhere_are_refused_with_a_hint(
    client: TestClient, upload_settings: Settings
) -> None:
    content = HEADER.replace(b",", b";") + b"".join(
        row(str(i), quantity=f"{i},5", sep=";") for i in range(3)
    )
    message = assert_refused(post(client, content), upload_settings, 400, "all_rows_rejected")
    assert "quantities use a decimal comma (e.g. '0,5'); write them with a decimal point" in message


def test_one_usable_row_keeps_the_file(client: TestClient, upload_settings: Settings) -> None:
    content = HEADER + row("1", date="10/01/2024") + row("2")
    preview = assert_kept(post(client, content), client, upload_settings, content)
    assert preview["rejected"] == {"bad_date": 1}
