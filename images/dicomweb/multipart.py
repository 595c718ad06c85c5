"""Streaming reader of multipart/related bodies (RFC 2387, RFC 2046 5.1; PS3.18 8.6.1.2): one part at a time, bounded memory.

Framework-free: it reads any object with `read(n)`, so STOW-RS today and any later multipart request can share it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from django.utils.http import parse_header_parameters

CRLF = b"\r\n"
READ_SIZE = 256 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_PADDING_BYTES = 1024


class MultipartError(Exception):
    """The body is not the multipart/related message its Content-Type announced (400)."""

    http_status = 400
    code = "malformed_multipart"

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class BodyTooLarge(MultipartError):
    http_status = 413
    code = "request_too_large"


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """('type/subtype' in lower case, {parameter: value}) of a Content-Type value; ('', {}) when there is none."""
    if not (value or "").strip():
        return "", {}
    media_type, params = parse_header_parameters(value)
    return media_type.strip().lower(), params


def check_boundary(boundary: str | None) -> bytes:
    """RFC 2046 5.1.1: 1 to 70 characters, no trailing space; returned as bytes for scanning."""
    if not boundary:
        raise MultipartError("The Content-Type has no boundary parameter (RFC 2046 5.1.1), so the parts cannot be found.")
    if len(boundary) > 70 or boundary.endswith(" ") or not boundary.isascii() or not boundary.isprintable():
        raise MultipartError(
            "The boundary parameter is not a valid multipart boundary (1 to 70 printable ASCII characters, RFC 2046 5.1.1)."
        )
    return boundary.encode("ascii")


@dataclass
class BodyPart:
    """One part: its headers (names in lower case) and its content, to be read once, in order, with chunks()."""

    index: int
    headers: dict[str, str]
    _chunks: Iterator[bytes]

    def chunks(self) -> Iterator[bytes]:
        return self._chunks

    def drain(self) -> None:
        for _ in self._chunks:
            pass


class MultipartReader:
    """Iterate over the parts of a multipart body read from `stream`, never holding more than a read's worth of it.

    Usage: `for part in MultipartReader(stream, boundary, max_bytes=...): for chunk in part.chunks(): ...`.
    Raises MultipartError for a malformed body and BodyTooLarge once more than max_bytes have been read.
    """

    def __init__(self, stream: BinaryIO, boundary: bytes, *, max_bytes: int, read_size: int = READ_SIZE):
        self._stream = stream
        self._max_bytes = max_bytes
        self._read_size = read_size
        self.bytes_read = 0
        # The delimiter includes the CRLF before "--boundary" (RFC 2046 5.1.1); starting the buffer with a CRLF lets a
        # body that opens directly with "--boundary" (no preamble) match like every later delimiter.
        self._delimiter = CRLF + b"--" + boundary
        self._buffer = bytearray(CRLF)
        self._eof = False

    def _fill(self) -> bool:
        if self._eof:
            return False
        try:
            chunk = self._stream.read(self._read_size)
        except OSError:  # the client went away mid-body (Django raises UnreadablePostError, an OSError)
            raise MultipartError("The body could not be read to its end: the connection broke.") from None
        if not chunk:
            self._eof = True
            return False
        self.bytes_read += len(chunk)
        if self.bytes_read > self._max_bytes:
            raise BodyTooLarge(f"The request body is larger than the {self._max_bytes:,} bytes this archive accepts in one request.")
        self._buffer += chunk
        return True

    def __iter__(self) -> Iterator[BodyPart]:
        self._skip_preamble()
        index = 0
        while self._another_part_follows():
            index += 1
            part = BodyPart(index=index, headers=self._read_headers(index), _chunks=self._read_content(index))
            yield part
            part.drain()

    def _skip_preamble(self) -> None:
        keep = len(self._delimiter) - 1
        while True:
            found = self._buffer.find(self._delimiter)
            if found >= 0:
                del self._buffer[: found + len(self._delimiter)]
                return
            if len(self._buffer) > keep:
                del self._buffer[:-keep]
            if not self._fill():
                raise MultipartError(
                    "The body does not contain the boundary given in the Content-Type header; "
                    "check that the boundary parameter matches the delimiter lines of the body."
                )

    def _another_part_follows(self) -> bool:
        """After a delimiter: '--' closes the body (the epilogue is ignored), else padding and CRLF open a part."""
        while len(self._buffer) < 2 and self._fill():
            pass
        if self._buffer[:2] == b"--":
            return False
        while True:
            end = self._buffer.find(CRLF)
            if end >= 0:
                if self._buffer[:end].strip(b" \t"):
                    raise MultipartError("A boundary line is followed by other text; the boundary probably occurs inside a part.")
                del self._buffer[: end + 2]
                return True
            if len(self._buffer) > MAX_PADDING_BYTES or not self._fill():
                raise MultipartError("The body ends without the closing boundary (--boundary--); it may have been cut short.")

    def _read_headers(self, index: int) -> dict[str, str]:
        while True:
            if self._buffer.startswith(CRLF):  # a part without headers
                del self._buffer[:2]
                return {}
            end = self._buffer.find(CRLF + CRLF)
            if end >= 0:
                block = bytes(self._buffer[:end])
                del self._buffer[: end + 4]
                return _parse_headers(block, index)
            if len(self._buffer) > MAX_HEADER_BYTES:
                raise MultipartError(f"The headers of part {index} are longer than {MAX_HEADER_BYTES:,} bytes.")
            if not self._fill():
                raise MultipartError(f"The body ends inside the headers of part {index}.")

    def _read_content(self, index: int) -> Iterator[bytes]:
        delimiter = self._delimiter
        keep = len(delimiter) - 1  # a delimiter may start in these last bytes: hold them back until more arrives
        while True:
            found = self._buffer.find(delimiter)
            if found >= 0:
                if found:
                    yield bytes(self._buffer[:found])
                del self._buffer[: found + len(delimiter)]
                return
            if len(self._buffer) > keep:
                chunk = bytes(self._buffer[:-keep])
                del self._buffer[:-keep]
                yield chunk
            if not self._fill():
                raise MultipartError(f"The body ends inside part {index}, before its closing boundary; it may have been cut short.")


def _parse_headers(block: bytes, index: int) -> dict[str, str]:
    headers: dict[str, str] = {}
    name = None
    for raw_line in block.split(CRLF):
        line = raw_line.decode("latin-1")
        if line[:1] in (" ", "\t") and name is not None:  # obsolete line folding (RFC 5322 2.2.3)
            headers[name] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        name = name.strip().lower()
        if not sep or not name:
            raise MultipartError(f"Part {index} has a malformed header line: {line[:80]!r}.")
        headers[name] = value.strip()
    return headers


# --- Writing ------------------------------------------------------------------------------------------------------------


def write_multipart(parts: Iterable[tuple[dict[str, str], Iterable[bytes]]], boundary: str) -> Iterator[bytes]:
    """The body of a multipart message from (headers, content chunks) pairs, produced part by part as it is read."""
    for headers, chunks in parts:
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        yield f"--{boundary}\r\n{lines}\r\n".encode("latin-1")
        yield from chunks
        yield CRLF
    yield f"--{boundary}--\r\n".encode("ascii")
