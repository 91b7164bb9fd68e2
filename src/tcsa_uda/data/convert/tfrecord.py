"""TFRecord files and ``tf.train.Example`` messages, read without TensorFlow.

The SIFA / PnP-AdaNet MM-WHS release stores its training slices as TFRecord files
(:mod:`tcsa_uda.data.convert.sifa_release`). This module decodes them with NumPy alone:

* **Framing.** A TFRecord file is a sequence of records, each::

      uint64 length         little-endian
      uint32 masked_crc32c(length bytes)
      byte   data[length]
      uint32 masked_crc32c(data)

  with ``masked(c) = ((c >> 15) | (c << 17)) + 0xA282EAD8`` (mod 2^32) and CRC-32C the
  Castagnoli CRC (reflected polynomial ``0x82F63B78``, initial value and final XOR ``0xFFFFFFFF``).
  Both CRCs are verified; a mismatch names the file, the record and its byte offset.
* **Example.** Each record holds one serialized ``tf.train.Example`` protocol buffer:
  ``Example{features=1: Features}``, ``Features{feature=1: map<string, Feature>}`` (map entries
  ``{key=1: string, value=2: Feature}``), ``Feature`` a oneof of ``bytes_list=1``, ``float_list=2``
  and ``int64_list=3``, each with ``repeated value=1`` (floats and int64 packed or not). A minimal
  wire-format parser reads exactly these messages and skips unknown fields.

CRC-32C of long records (a SIFA slice record holds about 1.5 MB) is computed with NumPy: the
record is cut into equal chunks whose CRCs advance together, one byte per step, and the chunk
CRCs are combined with the linear "append zero bytes" operator of the CRC (a 32 x 32 matrix over
GF(2), squared from level to level). Short inputs use the plain byte-wise table loop.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tcsa_uda.errors import DatasetError

CRC32C_POLY = 0x82F63B78
"""The reflected Castagnoli polynomial of CRC-32C."""
MASK_DELTA = 0xA282EAD8
"""Constant added by the TFRecord CRC mask."""
_M32 = 0xFFFFFFFF
_CHUNK = 256  # bytes per chunk of the vectorised CRC
_VECTOR_MIN = 16 * 1024  # inputs at least this long use the vectorised CRC


def _make_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ CRC32C_POLY if crc & 1 else crc >> 1
        table[i] = crc
    return table


_TABLE = _make_table()
_TABLE_LIST: list[int] = [int(v) for v in _TABLE]


def _crc_loop(data: bytes | memoryview, crc: int = 0) -> int:
    """Raw (no initial value, no final XOR) CRC-32C register after ``data``, byte by byte."""
    table = _TABLE_LIST
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def _apply(matrix: np.ndarray, states: np.ndarray) -> np.ndarray:
    """Apply a GF(2) operator given by its 32 column images ``matrix`` (32,) to ``states`` (N,)."""
    bits = (states[:, None] >> np.arange(32, dtype=np.uint32)[None, :]) & np.uint32(1)  # (N, 32)
    return np.bitwise_xor.reduce(np.where(bits.astype(bool), matrix[None, :], np.uint32(0)), axis=1)


def _zeros_operator(n_bytes: int) -> np.ndarray:
    """Column images (32,) of the register map "process ``n_bytes`` zero bytes" (raw CRC)."""
    cols = (np.uint32(1) << np.arange(32, dtype=np.uint32)).astype(np.uint32)
    for _ in range(n_bytes):
        cols = _TABLE[cols & np.uint32(0xFF)] ^ (cols >> np.uint32(8))
    return cols


_CHUNK_OPERATOR = _zeros_operator(_CHUNK)


def _crc_vector(data: bytes | memoryview) -> int:
    """Raw CRC-32C register of ``data`` (with zero start) computed chunk-parallel with NumPy."""
    buf = np.frombuffer(data, dtype=np.uint8)
    pad = (-buf.size) % _CHUNK
    # Leading zero bytes leave a zero register unchanged, so left-padding is free.
    padded = np.concatenate([np.zeros(pad, dtype=np.uint8), buf]) if pad else buf
    chunks = padded.reshape(-1, _CHUNK)  # (K, CHUNK)
    states = np.zeros(chunks.shape[0], dtype=np.uint32)
    for j in range(_CHUNK):
        states = _TABLE[(states ^ chunks[:, j]) & np.uint32(0xFF)] ^ (states >> np.uint32(8))
    operator = _CHUNK_OPERATOR  # "append one block of zeros" for the current block length
    while states.size > 1:
        if states.size % 2:  # a zero block in front changes nothing
            states = np.concatenate([np.zeros(1, dtype=np.uint32), states])
        left, right = states[0::2], states[1::2]
        states = _apply(operator, left) ^ right
        operator = _apply(operator, operator)  # block length doubles
    return int(states[0])


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C (Castagnoli) of ``data``, as in iSCSI, ext4 and TFRecord files.

    Example: ``crc32c(b"123456789") == 0xE3069283``.
    """
    view = memoryview(data).cast("B")
    if len(view) < max(_VECTOR_MIN, 4):
        return _crc_loop(view, _M32) ^ _M32
    # Starting the register at 0xFFFFFFFF equals XOR-ing it into the first four bytes.
    head = bytes(b ^ 0xFF for b in view[:4])
    raw = _crc_vector(head + bytes(view[4:]))
    return raw ^ _M32


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """The CRC TFRecord files store: CRC-32C rotated right by 15 bits plus :data:`MASK_DELTA`."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & _M32) + MASK_DELTA) & _M32


def iter_records(path: str | os.PathLike[str], verify: bool = True) -> Iterator[bytes]:
    """The records of a TFRecord file, in file order.

    Args:
        path: the ``.tfrecords`` file.
        verify: check the masked CRC-32C of every length field and record (default).

    Raises:
        DatasetError: unreadable file, a truncated record or a CRC mismatch (file, record number
            and byte offset named).
    """
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the TFRecord file ({exc}).") from exc
    view = memoryview(blob)
    offset, number = 0, 0
    while offset < len(blob):
        where = f"{path}: record {number} at byte {offset}"
        if offset + 12 > len(blob):
            raise DatasetError(f"{where}: expected a 12-byte record header, found {len(blob) - offset} byte(s).")
        header = view[offset : offset + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", view[offset + 8 : offset + 12])
        if verify and masked_crc32c(header) != length_crc:
            raise DatasetError(
                f"{where}: expected the length CRC {masked_crc32c(header):#010x}, found {length_crc:#010x} "
                "(not a TFRecord file, or a corrupt one)."
            )
        end = offset + 12 + length
        if end + 4 > len(blob):
            raise DatasetError(
                f"{where}: expected {length} data bytes and a 4-byte CRC, found {len(blob) - offset - 12} byte(s) "
                "(truncated file)."
            )
        data = view[offset + 12 : end]
        (data_crc,) = struct.unpack("<I", view[end : end + 4])
        if verify and masked_crc32c(data) != data_crc:
            raise DatasetError(
                f"{where}: expected the data CRC {masked_crc32c(data):#010x}, found {data_crc:#010x} (corrupt record)."
            )
        yield bytes(data)
        offset, number = end + 4, number + 1


# --------------------------------------------------------------------------------------------
# Protocol-buffer wire format

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class _Reader:
    """Cursor over one protocol-buffer message."""

    def __init__(self, data: bytes | memoryview, what: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.what = what

    def done(self) -> bool:
        return self.pos >= len(self.data)

    def fail(self, message: str) -> DatasetError:
        return DatasetError(f"{self.what}: malformed tf.train.Example at byte {self.pos}: {message}.")

    def varint(self) -> int:
        shift, value = 0, 0
        while True:
            if self.pos >= len(self.data):
                raise self.fail("truncated varint")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise self.fail("varint longer than 10 bytes")

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"expected {n} more byte(s), found {len(self.data) - self.pos}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def tag(self) -> tuple[int, int]:
        key = self.varint()
        return key >> 3, key & 7

    def skip(self, wire_type: int) -> None:
        if wire_type == _VARINT:
            self.varint()
        elif wire_type == _I64:
            self.take(8)
        elif wire_type == _LEN:
            self.take(self.varint())
        elif wire_type == _I32:
            self.take(4)
        else:
            raise self.fail(f"unsupported wire type {wire_type}")


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


@dataclass(frozen=True)
class Feature:
    """One value of an Example's feature map.

    Attributes:
        kind: ``bytes_list``, ``float_list`` or ``int64_list``.
        value: a list of ``bytes`` (bytes_list), float32 (N,) (float_list) or int64 (N,) (int64_list).
    """

    kind: str
    value: list[bytes] | np.ndarray

    def scalar_int(self, name: str, what: str) -> int:
        """The single int64 of an ``int64_list`` feature."""
        if self.kind != "int64_list" or len(self.value) != 1:
            raise DatasetError(
                f"{what}: expected feature {name!r} to hold one int64, found {self.kind} of {len(self.value)} value(s)."
            )
        return int(self.value[0])

    def single_bytes(self, name: str, what: str) -> bytes:
        """The single byte string of a ``bytes_list`` feature."""
        if self.kind != "bytes_list" or len(self.value) != 1:
            raise DatasetError(
                f"{what}: expected feature {name!r} to hold one byte string, found {self.kind} of "
                f"{len(self.value)} value(s)."
            )
        return bytes(self.value[0])


def _parse_feature(data: memoryview, what: str) -> Feature:
    reader = _Reader(data, what)
    kind: str | None = None
    value: list[bytes] | np.ndarray = []
    while not reader.done():
        field, wire = reader.tag()
        if field not in (1, 2, 3) or wire != _LEN:
            reader.skip(wire)
            continue
        body = _Reader(reader.take(reader.varint()), what)
        if field == 1:
            kind, items = "bytes_list", []
            while not body.done():
                f, w = body.tag()
                if f == 1 and w == _LEN:
                    items.append(bytes(body.take(body.varint())))
                else:
                    body.skip(w)
            value = items
        elif field == 2:
            kind, floats = "float_list", bytearray()
            while not body.done():
                f, w = body.tag()
                if f == 1 and w == _LEN:
                    floats += body.take(body.varint())
                elif f == 1 and w == _I32:
                    floats += body.take(4)
                else:
                    body.skip(w)
            if len(floats) % 4:
                raise reader.fail(f"packed float list of {len(floats)} bytes")
            value = np.frombuffer(bytes(floats), dtype="<f4").astype(np.float32)
        else:
            kind, ints = "int64_list", []
            while not body.done():
                f, w = body.tag()
                if f == 1 and w == _LEN:
                    packed = _Reader(body.take(body.varint()), what)
                    while not packed.done():
                        ints.append(_signed64(packed.varint()))
                elif f == 1 and w == _VARINT:
                    ints.append(_signed64(body.varint()))
                else:
                    body.skip(w)
            value = np.asarray(ints, dtype=np.int64)
    if kind is None:
        raise reader.fail("a Feature without bytes_list, float_list or int64_list")
    return Feature(kind, value)


def parse_example(data: bytes | memoryview, what: str = "record") -> dict[str, Feature]:
    """The feature map of one serialized ``tf.train.Example``.

    Args:
        data: the record bytes.
        what: name used in error messages (file and record number).

    Raises:
        DatasetError: malformed wire format, or a feature name repeated.
    """
    top = _Reader(data, what)
    out: dict[str, Feature] = {}
    while not top.done():
        field, wire = top.tag()
        if field != 1 or wire != _LEN:  # Example.features
            top.skip(wire)
            continue
        features = _Reader(top.take(top.varint()), what)
        while not features.done():
            f, w = features.tag()
            if f != 1 or w != _LEN:  # Features.feature (map entry)
                features.skip(w)
                continue
            entry = _Reader(features.take(features.varint()), what)
            key: str | None = None
            feature: Feature | None = None
            while not entry.done():
                ef, ew = entry.tag()
                if ef == 1 and ew == _LEN:
                    raw = bytes(entry.take(entry.varint()))
                    try:
                        key = raw.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise entry.fail(f"feature name is not UTF-8 ({raw[:20]!r})") from exc
                elif ef == 2 and ew == _LEN:
                    feature = _parse_feature(entry.take(entry.varint()), what)
                else:
                    entry.skip(ew)
            if key is None or feature is None:
                raise features.fail("a feature map entry without a name or a value")
            if key in out:
                raise features.fail(f"feature {key!r} appears twice")
            out[key] = feature
    return out


def iter_examples(path: str | os.PathLike[str], verify: bool = True) -> Iterator[dict[str, Feature]]:
    """The parsed ``tf.train.Example`` of every record of a TFRecord file (see :func:`iter_records`)."""
    for number, record in enumerate(iter_records(path, verify)):
        yield parse_example(record, f"{path}: record {number}")


__all__ = [
    "CRC32C_POLY",
    "MASK_DELTA",
    "Feature",
    "crc32c",
    "iter_examples",
    "iter_records",
    "masked_crc32c",
    "parse_example",
]
