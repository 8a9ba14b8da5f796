"""A zip archive written part by part, each part streamed through ISA-L's deflate: the container of report.xlsx.

Python's zipfile deflates with zlib, whose fastest level runs at about 200 MB/s;
ISA-L (the `isal` package) deflates the same XML at about 1 GB/s to the same size.
Each part is compressed as it is written, so a part never has to fit in memory,
and its CRC and sizes follow its data in a data descriptor, so nothing is seeked
back. ZIP64 fields appear only where a size or an offset passes 4 GiB, in the
form Apache POI settled on for Excel: 8-byte sizes in the data descriptor and the
central directory, a ZIP64 end record only when the archive itself needs one.
"""

from __future__ import annotations

import struct
import time
from typing import BinaryIO

from isal import isal_zlib

#: ISA-L's level 1: the ratio of zlib's level 1 at five times its speed.
LEVEL = 1
#: A size or offset from which ZIP64 fields are written. A module constant so a test can lower it.
ZIP64_FROM = 0xFFFF_FFFF
_FULL32, _FULL16 = 0xFFFF_FFFF, 0xFFFF
_DEFLATED = 8
_DESCRIPTOR_FLAG = 0x08
_VERSION = 20
_VERSION_ZIP64 = 45


def _dos_time(stamp: float) -> tuple[int, int]:
    """The (time, date) fields of a zip entry, to two seconds."""
    t = time.gmtime(stamp)
    return ((t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2),
            ((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday)


def _field32(value: int) -> int:
    """The value, or the mark that says "see the ZIP64 field"."""
    return _FULL32 if value >= ZIP64_FROM else value


class ZipStream:
    """Write parts one after the other: `with archive.part(name) as out: out.write(data)`; then `close()`."""

    def __init__(self, fh: BinaryIO, stamp: float | None = None):
        self._fh = fh
        self._offset = 0
        self._entries: list[tuple[bytes, int, int, int, int]] = []  # name, crc, packed, size, header offset
        self._time, self._date = _dos_time(time.time() if stamp is None else stamp)

    def _put(self, data: bytes) -> None:
        self._fh.write(data)
        self._offset += len(data)

    def part(self, name: str) -> _Part:
        return _Part(self, name.encode("ascii"))

    def write_part(self, name: str, data: bytes) -> None:
        with self.part(name) as out:
            out.write(data)

    def close(self) -> None:
        """Write the central directory (and the ZIP64 end records when the archive needs them)."""
        start = self._offset
        for name, crc, packed, size, offset in self._entries:
            big = [v for v in (size, packed, offset) if v >= ZIP64_FROM]  # the order ZIP64's extra field wants
            extra = struct.pack(f"<HH{len(big)}Q", 1, 8 * len(big), *big) if big else b""
            self._put(struct.pack(
                "<IHHHHHHIIIHHHHHII", 0x02014B50, _VERSION_ZIP64, _VERSION_ZIP64 if big else _VERSION,
                _DESCRIPTOR_FLAG, _DEFLATED, self._time, self._date, crc, _field32(packed), _field32(size),
                len(name), len(extra), 0, 0, 0, 0, _field32(offset)) + name + extra)
        size, count = self._offset - start, len(self._entries)
        if start >= ZIP64_FROM or size >= ZIP64_FROM or count >= _FULL16:
            end64 = self._offset
            self._put(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, _VERSION_ZIP64, _VERSION_ZIP64, 0, 0, count, count,
                                  size, start))
            self._put(struct.pack("<IIQI", 0x07064B50, 0, end64, 1))
        entries = min(count, _FULL16)
        self._put(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, entries, entries, _field32(size), _field32(start), 0))


class _Part:
    """One part being written: deflated and checksummed as it goes."""

    def __init__(self, archive: ZipStream, name: bytes):
        self._archive = archive
        self._name = name
        self._crc = 0
        self._size = 0
        self._packed = 0
        self._deflate = isal_zlib.compressobj(LEVEL, isal_zlib.DEFLATED, -15)
        self._offset = archive._offset
        archive._put(struct.pack("<IHHHHHIIIHH", 0x04034B50, _VERSION, _DESCRIPTOR_FLAG, _DEFLATED, archive._time,
                                 archive._date, 0, 0, 0, len(name), 0) + name)

    def write(self, data: bytes) -> None:
        self._crc = isal_zlib.crc32(data, self._crc)
        self._size += len(data)
        self._emit(self._deflate.compress(data))

    def _emit(self, packed: bytes) -> None:
        if packed:
            self._packed += len(packed)
            self._archive._put(packed)

    def __enter__(self) -> _Part:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """End the part: the rest of its deflated data, then its data descriptor."""
        self._emit(self._deflate.flush())
        big = self._size >= ZIP64_FROM or self._packed >= ZIP64_FROM
        self._archive._put(struct.pack("<IIQQ" if big else "<IIII", 0x08074B50, self._crc, self._packed, self._size))
        self._archive._entries.append((self._name, self._crc, self._packed, self._size, self._offset))
