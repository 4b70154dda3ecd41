"""Streaming readers for the face list formats.

Two formats are read:

* the original's JSON object ``{"<key>": {"label": 0, "x1": .., "y1": .., "x2": .., "y2": ..}, ...}``,
  parsed one entry at a time from a bounded buffer, so a list of millions of entries is never held in
  memory as text and as objects at once;
* JSON Lines, one record per line: ``{"path": "<key>", "label": 0, "x1": ..}``.

Both yield ``Entry`` items: one per record, in file order. A syntax error that makes the rest of the
file unreadable yields one ``FileError`` (counted as one input record, so the counts still add up)
and ends the stream; a JSON Lines file goes on with its next line instead.

A UTF-8 byte-order mark at the very start of the file (Windows tools write one) is skipped; anywhere
else it is not JSON and is reported as such.
"""
from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterator, Optional, Union

JSON_OBJECT = "json"
JSON_LINES = "jsonl"
_JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")

_WHITESPACE = re.compile(r"[ \t\n\r]*")
UTF8_BOM = codecs.BOM_UTF8
# One record's JSON text may not exceed this; beyond it the file is treated as malformed rather than
# buffered without bound.
MAX_RECORD_CHARS = 1 << 20


@dataclass(frozen=True)
class Entry:
    """One record as read from the file: its key (None when the key itself is unusable) and value."""
    index: int          # 0-based position of the record in its file
    key: Any            # str for well-formed input; anything else is reported by validation
    value: Any          # the parsed JSON value, or None when unparseable (see `error`)
    error: Optional[str] = None    # what is wrong with this record alone, if anything
    reason: Optional[str] = None   # its reason code (invalid_json, malformed_record, missing_field)


@dataclass(frozen=True)
class FileError:
    """The file (or its remainder from `index` on) cannot be read as records."""
    index: int
    reason: str         # invalid_json | bad_top_level
    detail: str


Item = Union[Entry, FileError]


def detect_format(path: str, explicit: Optional[str] = None) -> str:
    if explicit:
        if explicit not in (JSON_OBJECT, JSON_LINES):
            raise ValueError(f"unknown list format {explicit!r}; use {JSON_OBJECT!r} or {JSON_LINES!r}")
        return explicit
    return JSON_LINES if path.lower().endswith(_JSON_LINES_SUFFIXES) else JSON_OBJECT


class _DuplicateField(ValueError):
    pass


def _no_duplicate_fields(pairs):
    """object_pairs_hook: a record with the same field twice is malformed, not last-one-wins."""
    result = {}
    for name, value in pairs:
        if name in result:
            raise _DuplicateField(f"field {name!r} appears twice")
        result[name] = value
    return result


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_fields)


def read_entries(stream: BinaryIO, fmt: str, name: str = "<json>",
                 chunk_size: int = 1 << 16) -> Iterator[Item]:
    """Yields the records of `stream` (bytes) in `fmt` (JSON_OBJECT or JSON_LINES)."""
    if fmt == JSON_LINES:
        yield from _read_json_lines(stream, name)
    else:
        yield from _ObjectReader(stream, name, chunk_size).entries()


def _read_json_lines(stream: BinaryIO, name: str) -> Iterator[Item]:
    index = 0
    for line_number, raw_line in enumerate(stream, start=1):
        where = f"{name} line {line_number}"
        if line_number == 1 and raw_line.startswith(UTF8_BOM):
            raw_line = raw_line[len(UTF8_BOM):]
        try:
            line = raw_line.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            yield Entry(index, None, None, f"{where}: not UTF-8 ({e.reason} at byte {e.start})",
                        "invalid_json")
            index += 1
            continue
        if not line:
            continue
        try:
            value = _DECODER.decode(line)
        except json.JSONDecodeError as e:
            yield Entry(index, None, None, f"{where}: {e}", "invalid_json")
            index += 1
            continue
        except _DuplicateField as e:
            yield Entry(index, None, None, f"{where}: {e}", "malformed_record")
            index += 1
            continue
        if not isinstance(value, dict):
            yield FileError(index, "bad_top_level",
                            f"{where}: a JSON Lines record must be an object with a 'path' field, "
                            f"got {type(value).__name__}")
            index += 1
            continue
        key = value.pop("path", None)
        if key is None:
            yield Entry(index, None, value, f"{where}: record has no 'path' field", "missing_field")
        else:
            yield Entry(index, key, value)
        index += 1


class _ObjectReader:
    """Incremental parser for a JSON object whose values are parsed one at a time.

    The buffer only ever holds the unparsed tail of the file plus one chunk: consumed text is dropped.
    """

    def __init__(self, stream: BinaryIO, name: str, chunk_size: int):
        self._stream = stream
        self._name = name
        self._chunk_size = chunk_size
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._buf = ""
        self._pos = 0
        self._eof = False
        self._dropped_lines = 0   # newlines in text already dropped from the buffer
        self._dropped_chars = 0

    # -- buffer management ------------------------------------------------------------------------
    def _fill(self) -> bool:
        """Reads one more chunk. Returns False at end of input."""
        if self._eof:
            return False
        if self._pos:
            dropped = self._buf[:self._pos]
            self._dropped_lines += dropped.count("\n")
            self._dropped_chars += len(dropped)
            self._buf = self._buf[self._pos:]
            self._pos = 0
        chunk = self._stream.read(self._chunk_size)
        if not chunk:
            self._eof = True
            self._buf += self._decoder.decode(b"", final=True)
            return False
        self._buf += self._decoder.decode(chunk)
        return True

    def _skip_byte_order_mark(self) -> None:
        """Steps over U+FEFF when it is the file's first character (it may span several chunks)."""
        while not self._buf and self._fill():
            pass
        if self._buf.startswith("\ufeff"):
            self._pos = 1

    def _where(self) -> str:
        line = self._dropped_lines + self._buf.count("\n", 0, self._pos) + 1
        return f"{self._name} line {line} (character {self._dropped_chars + self._pos})"

    def _skip_whitespace(self) -> None:
        while True:
            self._pos = _WHITESPACE.match(self._buf, self._pos).end()
            if self._pos < len(self._buf) or not self._fill():
                return

    def _peek(self) -> str:
        self._skip_whitespace()
        return self._buf[self._pos] if self._pos < len(self._buf) else ""

    def _parse(self, parse_at):
        """Runs parse_at(buf, pos) -> (value, end), reading more input until the value is complete.

        A parse that ends exactly at the end of the buffer is not trusted before end of input: a
        number or literal could continue in the next chunk.
        """
        while True:
            try:
                value, end = parse_at(self._buf, self._pos)
                if end < len(self._buf) or self._eof:
                    self._pos = end
                    return value
            except json.JSONDecodeError:
                if self._eof:
                    raise
            if len(self._buf) - self._pos > MAX_RECORD_CHARS:
                raise json.JSONDecodeError(
                    f"record longer than {MAX_RECORD_CHARS} characters", self._buf, self._pos)
            self._fill()

    # -- grammar --------------------------------------------------------------------------------
    def entries(self) -> Iterator[Item]:
        try:
            self._skip_byte_order_mark()
            first = self._peek()
        except UnicodeDecodeError as e:
            yield FileError(0, "invalid_json", f"{self._name}: not UTF-8 text ({e.reason})")
            return
        if first != "{":
            yield self._not_an_object(first)
            return
        self._pos += 1
        yield from self._records()

    def _not_an_object(self, first: str) -> FileError:
        """Why a file that does not start with '{' is refused as a whole."""
        if first == "":
            return FileError(0, "invalid_json",
                             f"{self._name}: the file is empty (expected a JSON object)")
        if first == "[":
            return FileError(0, "bad_top_level",
                             f"{self._name}: top level is a JSON array; expected an object "
                             f'{{"<image path>": {{"label": .., "x1": ..}}, ...}} '
                             f"(or JSON Lines in a .jsonl file)")
        try:   # a JSON scalar is valid JSON of the wrong shape; anything else is not JSON
            self._parse(json.JSONDecoder().raw_decode)
            reason = "bad_top_level"
        except json.JSONDecodeError:
            reason = "invalid_json"
        return FileError(0, reason, f"{self._name}: expected a JSON object at the start, "
                                    f"found {first!r}")

    def _records(self) -> Iterator[Item]:
        """The object's records after its '{', then a FileError if the rest is not valid JSON."""
        index = 0
        try:
            if self._peek() == "}":
                self._pos += 1
                self._expect_end()
                return
            while True:
                if self._peek() != '"':
                    raise json.JSONDecodeError("expected a string key", self._buf, self._pos)
                key = self._parse(lambda buf, pos: json.decoder.scanstring(buf, pos + 1))
                if self._peek() != ":":
                    raise json.JSONDecodeError("expected ':' after key", self._buf, self._pos)
                self._pos += 1
                self._skip_whitespace()
                try:
                    value = self._parse(_DECODER.raw_decode)
                except _DuplicateField as e:
                    # The value's extent is unknown after the hook fired; the syntax is still intact,
                    # so skip it with a plain decoder and report this record alone. (The position
                    # is only worked out here: counting lines for every record costs time.)
                    start_where = self._where()
                    self._parse(json.JSONDecoder().raw_decode)
                    yield Entry(index, key, None, f"{start_where}: {e}", "malformed_record")
                    index += 1
                else:
                    yield Entry(index, key, value)
                    index += 1
                separator = self._peek()
                if separator == ",":
                    self._pos += 1
                    continue
                if separator == "}":
                    self._pos += 1
                    self._expect_end()
                    return
                raise json.JSONDecodeError("expected ',' or '}' after a record", self._buf, self._pos)
        except json.JSONDecodeError as e:
            yield FileError(index, "invalid_json",
                            f"{self._name}: {e.msg} (record starting at {self._where()}); the {index} "
                            f"record(s) before it were read, nothing after it")
        except UnicodeDecodeError as e:
            yield FileError(index, "invalid_json",
                            f"{self._name}: not UTF-8 text ({e.reason}) after {index} record(s)")

    def _expect_end(self) -> None:
        if self._peek() != "":
            raise json.JSONDecodeError("unexpected text after the closing '}'", self._buf, self._pos)
