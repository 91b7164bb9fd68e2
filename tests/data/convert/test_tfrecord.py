"""TFRecord framing, CRC-32C and tf.train.Example decoding without TensorFlow (tcsa_uda.data.convert.tfrecord).

Files are written by the test-side encoder of conftest.py (bitwise CRC-32C, hand-built protocol buffers).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from tcsa_uda.data.convert.tfrecord import crc32c, iter_examples, iter_records, masked_crc32c, parse_example
from tcsa_uda.errors import DatasetError


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"123456789", 0xE3069283),  # the CRC catalogue's check value of CRC-32C
        (bytes(32), 0x8A9136AA),  # RFC 3720 appendix B.4
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
        (b"", 0x00000000),
    ],
)
def test_crc32c_known_values(data: bytes, expected: int) -> None:
    assert crc32c(data) == expected


@pytest.mark.parametrize("n", [1, 3, 4, 5, 255, 16383, 16384, 16385, 20000, 33 * 256 + 7])
def test_crc32c_agrees_with_a_bitwise_reference_on_both_code_paths(raw, n: int) -> None:
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    assert crc32c(data) == raw.crc32c_bitwise(data)
    assert masked_crc32c(data) == raw.masked_crc(data)


def _write(path: Path, blob: bytes) -> Path:
    path.write_bytes(blob)
    return path


def test_records_round_trip_in_file_order(raw, tmp_path: Path) -> None:
    records = [b"", b"0123456789", np.arange(20000, dtype=np.uint8).tobytes()]
    path = _write(tmp_path / "a.tfrecords", raw.tfrecord_bytes(records))
    assert list(iter_records(path)) == records


def test_a_corrupt_record_is_named_with_its_offset(raw, tmp_path: Path) -> None:
    blob = bytearray(raw.tfrecord_bytes([b"first", b"second record"]))
    second = 12 + 5 + 4  # header + data + CRC of the first record
    blob[second + 12 + 3] ^= 0x01  # one bit of the second record's data
    path = _write(tmp_path / "b.tfrecords", bytes(blob))
    with pytest.raises(DatasetError, match=rf"b.tfrecords: record 1 at byte {second}: expected the data CRC"):
        list(iter_records(path))
    assert len(list(iter_records(path, verify=False))) == 2


def test_a_file_that_is_not_a_tfrecord_or_is_truncated_is_refused(raw, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"record 0 at byte 0: expected the length CRC"):
        list(iter_records(_write(tmp_path / "c.tfrecords", b"not a tfrecord file, just text")))
    blob = raw.tfrecord_bytes([b"x" * 40])
    with pytest.raises(DatasetError, match=r"expected 40 data bytes and a 4-byte CRC, found 20 byte\(s\)"):
        list(iter_records(_write(tmp_path / "d.tfrecords", blob[:32])))
    with pytest.raises(DatasetError, match=r"expected a 12-byte record header, found 5"):
        list(iter_records(_write(tmp_path / "e.tfrecords", blob + b"12345")))


def test_parse_example_decodes_every_feature_kind(raw) -> None:
    feats = {
        "names": raw.feature_bytes(b"alpha", b"", b"\x00\xff"),
        "packed": raw.feature_int64(256, -10, 0, 2**40),
        "unpacked": raw.feature_int64(3, -1, packed=False),
        "floats": raw.feature_float(1.5, -2.25),
        "floats_unpacked": raw.feature_float(0.5, packed=False),
    }
    data = raw.encode_example(feats)
    # Unknown fields (a varint 7 at the top level) are skipped.
    data = raw.varint(7 << 3 | 0) + raw.varint(99) + data
    ex = parse_example(data)
    assert sorted(ex) == sorted(feats)
    assert ex["names"].kind == "bytes_list" and ex["names"].value == [b"alpha", b"", b"\x00\xff"]
    assert ex["packed"].kind == "int64_list" and list(ex["packed"].value) == [256, -10, 0, 2**40]
    assert list(ex["unpacked"].value) == [3, -1]
    assert ex["floats"].kind == "float_list"
    np.testing.assert_array_equal(ex["floats"].value, np.array([1.5, -2.25], dtype=np.float32))
    np.testing.assert_array_equal(ex["floats_unpacked"].value, np.array([0.5], dtype=np.float32))
    with pytest.raises(DatasetError, match=r"feature 'packed' to hold one int64, found int64_list of 4"):
        ex["packed"].scalar_int("packed", "rec")


def test_parse_example_refuses_malformed_messages(raw) -> None:
    good = raw.encode_example({"a": raw.feature_int64(1)})
    with pytest.raises(DatasetError, match=r"f.tfrecords: record 0: malformed tf.train.Example at byte \d+"):
        parse_example(good[:-2], "f.tfrecords: record 0")
    twice = raw.pb_len(1, raw.pb_len(1, raw.pb_len(1, b"a") + raw.pb_len(2, raw.feature_int64(1))) * 2)
    with pytest.raises(DatasetError, match="feature 'a' appears twice"):
        parse_example(twice)


def test_iter_examples_reads_a_sifa_slice_record(raw, tmp_path: Path) -> None:
    data = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)
    label = np.ones((4, 5, 3), dtype=np.float32)
    path = _write(tmp_path / "mr_train_slice0.tfrecords", raw.tfrecord_bytes([raw.sifa_slice_example(data, label)]))
    (ex,) = list(iter_examples(path))
    assert ex["dsize_dim2"].scalar_int("dsize_dim2", "x") == 3
    assert ex["bias_dim0"].scalar_int("bias_dim0", "x") == -10
    got = np.frombuffer(ex["data_vol"].single_bytes("data_vol", "x"), dtype="<f4").reshape(4, 5, 3)
    np.testing.assert_array_equal(got, data)
    assert struct.unpack("<Q", path.read_bytes()[:8])[0] == len(raw.sifa_slice_example(data, label))
