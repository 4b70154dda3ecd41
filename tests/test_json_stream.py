import io
import json

import pytest

from core import json_stream as js


def read(text, fmt=js.JSON_OBJECT, chunk_size=1 << 16):
    data = text.encode("utf-8") if isinstance(text, str) else text
    return list(js.read_entries(io.BytesIO(data), fmt, "list.json", chunk_size))


def as_pairs(items):
    return [(item.key, item.value) for item in items]


GOOD = {
    "Asian/p14/profile2.jpg": {"label": 0, "x1": 7, "y1": 7, "x2": 43, "y2": 65},
    "African/p1/é ü.jpg": {"label": 12345678901, "x1": -3, "y1": 0, "x2": 1000, "y2": 99,
                           "extra": {"nested": [1, 2, {"a": "}"}]}},
    "k\"with\\escapes\u2603": {"label": 2, "x1": 1, "y1": 2, "x2": 3, "y2": 4},
}


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7, 64, 1 << 16])
@pytest.mark.parametrize("indent", [None, 1])
def test_object_stream_matches_json_module_at_any_chunk_boundary(chunk_size, indent):
    text = json.dumps(GOOD, indent=indent, ensure_ascii=False)
    items = read(text, chunk_size=chunk_size)
    assert as_pairs(items) == list(json.loads(text).items())
    assert [item.index for item in items] == [0, 1, 2]
    assert all(item.error is None for item in items)


def test_numbers_split_across_chunks_are_not_cut():
    text = '{"a": 123456789, "b": {"label": 987654321}}'
    for chunk_size in range(1, 12):
        assert as_pairs(read(text, chunk_size=chunk_size)) == [("a", 123456789),
                                                              ("b", {"label": 987654321})]


def test_empty_object_has_no_records():
    assert read("  {  }  ") == []


def test_duplicate_top_level_keys_are_all_reported_for_the_shuffle_to_find():
    items = read('{"a": 1, "a": 2, "b": 3}')
    assert as_pairs(items) == [("a", 1), ("a", 2), ("b", 3)]


def test_duplicate_field_inside_a_record_is_malformed_and_the_stream_goes_on():
    items = read('{"a": {"label": 1, "label": 2}, "b": {"label": 3}}', chunk_size=4)
    assert items[0].key == "a" and items[0].reason == "malformed_record"
    assert "label" in items[0].error
    assert (items[1].key, items[1].value, items[1].error) == ("b", {"label": 3}, None)


@pytest.mark.parametrize("text,reason", [
    ("", "invalid_json"),
    ("not json at all", "invalid_json"),
    ("[1, 2]", "bad_top_level"),
    ('"a string"', "bad_top_level"),
    ("42", "bad_top_level"),
    ("{} trailing", "invalid_json"),
])
def test_unreadable_file_is_one_error(text, reason):
    items = read(text)
    assert len(items) == 1
    assert isinstance(items[0], js.FileError) and items[0].reason == reason
    assert "list.json" in items[0].detail


def test_truncated_object_keeps_the_records_before_the_cut_and_reports_the_rest_once():
    text = json.dumps(GOOD)
    cut = text[: text.index('"k\\"with')] + '"k": {"label": 2, "x1'
    items = read(cut, chunk_size=8)
    assert as_pairs(items[:2]) == list(GOOD.items())[:2]
    assert len(items) == 3
    assert isinstance(items[2], js.FileError) and items[2].reason == "invalid_json"
    assert items[2].index == 2 and "2 record(s) before it" in items[2].detail


def test_non_utf8_bytes_are_an_error_not_a_crash():
    items = read(b'{"a": {"label": 1}, "b\xff\xfe": {"label": 2}}', chunk_size=5)
    assert as_pairs(items[:1]) == [("a", {"label": 1})]
    assert isinstance(items[-1], js.FileError) and "UTF-8" in items[-1].detail


def test_a_huge_record_is_refused_instead_of_buffered_without_bound(monkeypatch):
    monkeypatch.setattr(js, "MAX_RECORD_CHARS", 100)
    items = read('{"a": {"label": "' + "x" * 10_000)
    assert isinstance(items[-1], js.FileError) and "longer than 100" in items[-1].detail


def test_json_lines_records_and_per_line_errors():
    lines = [
        json.dumps({"path": "a.jpg", "label": 1}),
        "",
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"label": 2}),
        '{"path": "d.jpg", "label": 1, "label": 2}',
        json.dumps({"path": "e.jpg", "label": 5, "x1": 0}),
    ]
    items = read("\n".join(lines) + "\n", fmt=js.JSON_LINES)
    kinds = [(type(i).__name__, getattr(i, "reason", None)) for i in items]
    assert kinds == [("Entry", None), ("Entry", "invalid_json"), ("FileError", "bad_top_level"),
                     ("Entry", "missing_field"), ("Entry", "malformed_record"), ("Entry", None)]
    assert [i.index for i in items] == [0, 1, 2, 3, 4, 5]
    assert (items[0].key, items[0].value) == ("a.jpg", {"label": 1})
    assert (items[5].key, items[5].value) == ("e.jpg", {"label": 5, "x1": 0})
    assert "line 3" in items[1].error


def test_format_detection():
    assert js.detect_format("x/list.jsonl") == js.JSON_LINES
    assert js.detect_format("x/list.NDJSON") == js.JSON_LINES
    assert js.detect_format("x/list.json") == js.JSON_OBJECT
    assert js.detect_format("x/list.json", "jsonl") == js.JSON_LINES
    with pytest.raises(ValueError):
        js.detect_format("x", "csv")


BOM = b"\xef\xbb\xbf"   # U+FEFF in UTF-8, as Windows tools write it at the start of a text file


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 4, 1 << 16])   # the mark split across chunks too
def test_object_list_starting_with_a_byte_order_mark_is_read(chunk_size):
    text = json.dumps(GOOD, indent=1, ensure_ascii=False)
    items = read(BOM + text.encode("utf-8"), chunk_size=chunk_size)
    assert as_pairs(items) == list(GOOD.items())
    assert all(item.error is None for item in items)
    assert read(BOM + b"{}", chunk_size=chunk_size) == []


def test_json_lines_list_starting_with_a_byte_order_mark_is_read():
    lines = [json.dumps({"path": "a.jpg", "label": 1}), json.dumps({"path": "b.jpg", "label": 2})]
    items = read(BOM + "\n".join(lines).encode("utf-8"), fmt=js.JSON_LINES)
    assert as_pairs(items) == [("a.jpg", {"label": 1}), ("b.jpg", {"label": 2})]
    assert all(item.error is None for item in items)


def test_a_byte_order_mark_after_the_start_is_still_invalid():
    # Only the very first bytes of the file may be the mark: anywhere else it is not JSON.
    items = read(b" " + BOM + b"{}")
    assert len(items) == 1 and items[0].reason == "invalid_json"
    items = read(BOM + BOM + b"{}")
    assert len(items) == 1 and items[0].reason == "invalid_json"
    line = json.dumps({"path": "a.jpg", "label": 1}).encode("utf-8")
    items = read(line + b"\n" + BOM + line + b"\n", fmt=js.JSON_LINES)
    assert [i.reason for i in items] == [None, "invalid_json"] and "line 2" in items[1].error
