"""Reading and writing volumes (NIfTI through nibabel) with errors that name the file.

A volume is returned as a float32 (images) or integer (labels) numpy array in the file's voxel
order, with its 4x4 affine and the header, so predictions can be written back on the same grid.

Bounded reading: before any voxel is read, the size the header claims (shape x data type, from
the data offset) is checked against the size of the file (uncompressed ``.nii``) and against a
memory budget. A ``.nii.gz`` is decompressed as a stream into a buffer of exactly the claimed
size: a stream that ends early, or that would decompress to more than the header claims, is
refused as soon as it is detected, so a corrupt header or a decompression bomb never allocates
more than the budget. The budget is :data:`DEFAULT_MAX_VOLUME_BYTES` (8 GiB) unless the
environment variable :data:`MAX_VOLUME_BYTES_ENV` (``TCSA_UDA_MAX_VOLUME_BYTES``) or the
``max_bytes`` argument sets another one. ``.npy`` / ``.npz`` arrays are bounded the same way
(:func:`load_npy`, :func:`load_npz`).

Writing (:func:`save_nifti`): the header of the source volume is kept, with its qform and sform
written unchanged (each with its own code) whenever the output lies on the source grid, and the
fields that describe intensities reset for label maps and probability maps.
"""

from __future__ import annotations

import math
import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import nibabel as nib
import numpy as np
from nibabel.volumeutils import apply_read_scaling

from tcsa_uda.atomic import atomic_path
from tcsa_uda.errors import ConfigError, DatasetError, MissingPathError, VolumeSizeError

NIFTI_SUFFIXES = (".nii", ".nii.gz")

MAX_VOLUME_BYTES_ENV = "TCSA_UDA_MAX_VOLUME_BYTES"
"""Environment variable with the memory budget of one volume (bytes; ``K``/``M``/``G``/``T`` suffixes allowed)."""
DEFAULT_MAX_VOLUME_BYTES = 8 * 1024**3
"""Memory budget of one volume when neither ``max_bytes`` nor the environment sets one (8 GiB)."""

NIFTI_INTENT_LABEL = 1002
"""NIfTI-1 intent code of a label map (``NIFTI_INTENT_LABEL``: values are indices, not intensities)."""
OUTPUT_KINDS: tuple[str, ...] = ("image", "label", "probability")
"""What :func:`save_nifti` writes: intensities, a label map, or probability maps in [0, 1]."""
AFFINE_SAME_ATOL = 1e-6
"""Largest difference between ``affine`` and the header's own affine for the header's geometry to be kept."""

_GZIP_MAGIC = b"\x1f\x8b"
DEFLATE_MAX_RATIO = 1032
"""Largest expansion of deflate (a 258-byte match coded in 2 bits): a gzip file of ``n`` bytes
decompresses to at most ``1032 * n`` bytes, so a header claiming more is refused unread."""
_READ_CHUNK = 1 << 20  # compressed bytes read at once
_SIZE_RE = re.compile(r"(\d+)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


@dataclass
class Volume:
    """A 3D array with its voxel-to-world affine and the original NIfTI header."""

    array: np.ndarray  # (X, Y, Z) in the file's voxel order
    affine: np.ndarray  # (4, 4)
    header: nib.Nifti1Header | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the three array axes."""
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]


def is_nifti(path: str | os.PathLike[str]) -> bool:
    name = str(path).lower()
    return name.endswith(NIFTI_SUFFIXES)


# --------------------------------------------------------------------------------------------
# Memory budget


def parse_byte_size(text: str, name: str = MAX_VOLUME_BYTES_ENV) -> int:
    """A positive size in bytes from ``"8589934592"``, ``"512M"``, ``"8GiB"`` (binary multiples).

    Raises:
        ConfigError: naming ``name``, the expected form and what was found.
    """
    match = _SIZE_RE.fullmatch(text.strip())
    value = int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()] if match else 0
    if value <= 0:
        raise ConfigError(
            f"{name}: expected a positive number of bytes, optionally with K, M, G or T (e.g. 8G), found {text!r}."
        )
    return value


def max_volume_bytes(max_bytes: int | None = None) -> int:
    """The memory budget of one volume: ``max_bytes``, else ``$TCSA_UDA_MAX_VOLUME_BYTES``, else 8 GiB.

    Raises:
        ConfigError: ``max_bytes`` or the environment variable is not a positive size.
    """
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ConfigError(f"max_bytes: expected a positive integer (bytes), found {max_bytes!r}.")
        return max_bytes
    env = os.environ.get(MAX_VOLUME_BYTES_ENV)
    if env is None or not env.strip():
        return DEFAULT_MAX_VOLUME_BYTES
    return parse_byte_size(env)


def _describe(shape: tuple[int, ...], dtype: np.dtype) -> str:
    return f"{' x '.join(map(str, shape))} {np.dtype(dtype).name}"


def _check_budget(path: Path, what: str, needed: int, budget: int, claim: str) -> None:
    if needed > budget:
        raise VolumeSizeError(
            f"{path}: the {what} would need {needed} bytes in memory ({claim}), more than the budget of {budget} "
            f"bytes; if the file is genuine, raise it with {MAX_VOLUME_BYTES_ENV}."
        )


# --------------------------------------------------------------------------------------------
# NIfTI


@dataclass(frozen=True)
class NiftiLayout:
    """Where a NIfTI header says its voxel data is, and how much memory reading it takes.

    Attributes:
        shape: array shape from the header (``dim``).
        dtype: on-disk data type (byte order included).
        offset: byte offset of the voxel data (``vox_offset``).
        data_bytes: bytes of voxel data the header claims (``prod(shape) * itemsize``).
        scaled: True when ``scl_slope``/``scl_inter`` turn the stored values into floats.
        memory_bytes: upper bound of the memory the loaded array takes (raw data, plus a float64
            copy when scaled).
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int
    data_bytes: int
    scaled: bool
    memory_bytes: int

    @property
    def end(self) -> int:
        """Byte position just after the voxel data."""
        return self.offset + self.data_bytes

    def claim(self) -> str:
        """``"1000 x 1000 x 400 float32 = 1600000000 bytes from offset 352"``."""
        return f"{_describe(self.shape, self.dtype)} = {self.data_bytes} bytes from offset {self.offset}"


def nifti_layout(img: Any) -> NiftiLayout:
    """The :class:`NiftiLayout` of a lazily loaded nibabel image (nothing is read).

    Uses the image's array proxy (``dataobj``), which holds the offset nibabel will read from.
    """
    proxy = img.dataobj
    shape = tuple(int(n) for n in proxy.shape)
    dtype = np.dtype(proxy.dtype)
    offset = int(proxy.offset)
    n_voxels = math.prod(shape)
    data_bytes = n_voxels * dtype.itemsize
    slope, inter = float(proxy.slope), float(proxy.inter)
    scaled = slope != 1.0 or inter != 0.0
    memory = data_bytes + (8 * n_voxels if scaled else 0)
    return NiftiLayout(shape, dtype, offset, data_bytes, scaled, memory)


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == _GZIP_MAGIC


def gunzip_bounded(path: Path, size: int, claim: str) -> np.ndarray:
    """Decompress a gzip file into a buffer of exactly ``size`` bytes, refusing any other size.

    The buffer is filled as the stream is decompressed (at most one chunk more than ``size`` is
    ever produced), so a stream that would expand beyond ``size`` stops at the first byte too
    many, and a short stream fails at its end. Concatenated gzip members and zero padding after
    the last member are accepted, as by Python's ``gzip``.

    Args:
        path: the ``.gz`` file.
        size: the exact number of decompressed bytes expected.
        claim: what claims ``size`` (for messages, e.g. ``NiftiLayout.claim()``).

    Returns:
        (size,) uint8 buffer.

    Raises:
        VolumeSizeError: the stream decompresses to more or fewer than ``size`` bytes.
        DatasetError: the stream is not valid gzip.
    """
    out = np.empty(size, dtype=np.uint8)
    view = out.data  # writable memoryview of the buffer
    filled = 0
    decomp = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    pending = b""
    in_member = True
    with open(path, "rb") as fh:
        while True:
            if not pending:
                pending = fh.read(_READ_CHUNK)
                if not pending:
                    break
            if not in_member:
                if pending.strip(b"\0") == b"":  # zero padding after the last member
                    pending = b""
                    continue
                if len(pending) < 2:
                    pending += fh.read(_READ_CHUNK)
                if not pending.lstrip(b"\0").startswith(_GZIP_MAGIC):
                    raise DatasetError(
                        f"{path}: unexpected bytes after the end of the gzip stream; the file is corrupt."
                    )
                pending = pending.lstrip(b"\0")
                decomp = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                in_member = True
            try:
                piece = decomp.decompress(pending, size - filled + 1)  # one byte more than room reveals excess
            except zlib.error as exc:
                raise DatasetError(f"{path}: cannot decompress the gzip stream ({exc}); the file is corrupt.") from exc
            if filled + len(piece) > size:
                raise VolumeSizeError(
                    f"{path}: the gzip stream decompresses to more than the {size} bytes that {claim}; "
                    "refusing to read further (corrupt header or decompression bomb)."
                )
            view[filled : filled + len(piece)] = piece
            filled += len(piece)
            if decomp.eof:
                pending, in_member = decomp.unused_data, False
            else:
                pending = decomp.unconsumed_tail
    if in_member and filled < size:
        raise VolumeSizeError(
            f"{path}: {claim}, but the gzip stream ends after {filled} decompressed bytes; the file is truncated."
        )
    if in_member:
        raise DatasetError(f"{path}: the gzip stream ends without its trailer; the file is truncated.")
    if filled < size:
        raise VolumeSizeError(
            f"{path}: {claim}, but the gzip stream holds only {filled} decompressed bytes; the file is truncated "
            "or its header is corrupt."
        )
    return out


def read_nifti(
    path: str | os.PathLike[str], what: str = "image", max_bytes: int | None = None
) -> tuple[np.ndarray, np.ndarray, Any]:
    """Read a NIfTI file as ``(array, affine, header)`` within a memory budget.

    The header is read first; the size it claims is checked against the file size (``.nii``) and
    against the budget before any voxel is read; a gzip file is decompressed with
    :func:`gunzip_bounded`. Scaling (``scl_slope``/``scl_inter``) is applied as nibabel does.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file (gzip is recognised by its content).
        what: the volume's role in messages (``image``, ``label``, ...).
        max_bytes: memory budget in bytes; default :func:`max_volume_bytes`.

    Returns:
        The array in the file's shape and voxel order, the (4, 4) float64 affine, the header.

    Raises:
        MissingPathError: the file does not exist.
        VolumeSizeError: the header claims more data than the file holds or than the budget.
        DatasetError: the file cannot be read as NIfTI.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"{path}: {what} file does not exist.")
    budget = max_volume_bytes(max_bytes)
    try:
        img = nib.load(str(path))  # header only; the voxel data stays on disk
        layout = nifti_layout(img)
        compressed = _is_gzip(path)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise DatasetError(f"{path}: cannot read {what} as NIfTI ({type(exc).__name__}: {exc}).") from exc
    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image is a subclass; .hdr/.img pairs are not
        raise DatasetError(
            f"{path}: expected a single-file NIfTI {what} (.nii or .nii.gz), found a {type(img).__name__}."
        )
    file_size = path.stat().st_size
    if not compressed and layout.end > file_size:
        raise VolumeSizeError(
            f"{path}: the NIfTI header claims {layout.claim()}, but the file holds only {file_size} bytes; "
            "the file is truncated or its header is corrupt."
        )
    if compressed and layout.end > DEFLATE_MAX_RATIO * file_size:
        raise VolumeSizeError(
            f"{path}: the NIfTI header claims {layout.claim()}, but the file holds only {file_size} gzip bytes, "
            f"which decompress to at most {DEFLATE_MAX_RATIO * file_size} bytes; the file is truncated or its "
            "header is corrupt."
        )
    _check_budget(path, what, layout.memory_bytes + (layout.offset if compressed else 0), budget, layout.claim())
    try:
        if compressed:
            buffer = gunzip_bounded(path, layout.end, f"the NIfTI header claims ({layout.claim()})")
            raw = np.ndarray(layout.shape, dtype=layout.dtype, buffer=buffer, offset=layout.offset, order="F")
            data = _apply_scaling(raw, img.dataobj)
        else:
            data = np.asanyarray(img.dataobj)
    except DatasetError:
        raise
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise DatasetError(f"{path}: cannot read {what} as NIfTI ({type(exc).__name__}: {exc}).") from exc
    return np.asarray(data), np.asarray(img.affine, dtype=np.float64), img.header


def _apply_scaling(raw: np.ndarray, proxy: Any) -> np.ndarray:
    """The scaled values of ``raw`` exactly as nibabel's ``ArrayProxy`` computes them."""
    slope = np.asanyarray(proxy.slope)
    inter = np.asanyarray(proxy.inter)
    if np.can_cast(inter.dtype, slope.dtype):
        inter = inter.astype(slope.dtype)
    return apply_read_scaling(raw, slope, inter)


def load_nifti(
    path: str | os.PathLike[str], channel: int | None = None, what: str = "image", max_bytes: int | None = None
) -> Volume:
    """Load a NIfTI file as a 3D volume, within a memory budget (see :func:`read_nifti`).

    A 4D image with a single volume is squeezed to 3D; a real 4D image needs ``channel``.

    Raises:
        MissingPathError: the file does not exist.
        VolumeSizeError: the header claims more data than the file holds or than the budget.
        DatasetError: the file cannot be read, or its dimensionality is not 3D.
    """
    path = Path(path)
    data, affine, header = read_nifti(path, what, max_bytes)
    data = select_3d(data, channel, path, what)
    return Volume(array=np.asarray(data), affine=affine, header=header)


def select_3d(data: np.ndarray, channel: int | None, path: Path, what: str) -> np.ndarray:
    """Reduce ``data`` to 3D: squeeze a single 4th volume or pick ``channel``; else raise."""
    if data.ndim == 4:
        if channel is not None:
            if not 0 <= channel < data.shape[3]:
                raise DatasetError(
                    f"{path}: channel {channel} requested but the {what} has {data.shape[3]} volumes (shape "
                    f"{data.shape})."
                )
            return data[..., channel]
        if data.shape[3] == 1:
            return data[..., 0]
        raise DatasetError(
            f"{path}: expected a 3D {what}, found a 4D image of shape {data.shape}; "
            f"choose one volume with the domain's 'channel' key."
        )
    if data.ndim != 3:
        raise DatasetError(f"{path}: expected a 3D {what}, found {data.ndim}D data of shape {data.shape}.")
    return data


# --------------------------------------------------------------------------------------------
# numpy .npy / .npz


def _npy_header(fh: IO[bytes], path: Path, what: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    """``(shape, dtype, fortran_order)`` of the ``.npy`` stream ``fh`` (positioned at its start)."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    except (ValueError, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read the {what} as a numpy .npy array ({exc}).") from exc
    if dtype.hasobject:
        raise DatasetError(
            f"{path}: the {what} holds Python objects (dtype {dtype}); only plain numeric arrays are read."
        )
    return tuple(int(n) for n in shape), np.dtype(dtype), bool(fortran)


def load_npy(
    path: str | os.PathLike[str], what: str = "array", max_bytes: int | None = None, mmap: bool = False
) -> np.ndarray:
    """Load a ``.npy`` file after checking its header against the file size and the budget.

    Args:
        path: the ``.npy`` file.
        what: its role in messages.
        max_bytes: memory budget in bytes (not applied with ``mmap``, which reads lazily).
        mmap: return a read-only memory map instead of reading the data.

    Raises:
        MissingPathError: no such file.
        VolumeSizeError: the header claims more data than the file holds or than the budget.
        DatasetError: not a plain numeric ``.npy`` file.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"{path}: {what} file does not exist.")
    budget = max_volume_bytes(max_bytes)
    with open(path, "rb") as fh:
        shape, dtype, _ = _npy_header(fh, path, what)
        offset = fh.tell()
    nbytes = math.prod(shape) * dtype.itemsize
    claim = f"{_describe(shape, dtype)} = {nbytes} bytes from offset {offset}"
    size = path.stat().st_size
    if offset + nbytes > size:
        raise VolumeSizeError(
            f"{path}: the .npy header claims {claim}, but the file holds only {size} bytes; the file is truncated."
        )
    if not mmap:
        _check_budget(path, what, nbytes, budget, claim)
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read the {what} as a numpy .npy array ({exc}).") from exc


def load_npz(path: str | os.PathLike[str], what: str = "array", max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Load every array of a ``.npz`` file, bounded: member headers are checked before reading.

    Each member's ``.npy`` header must claim exactly the member's size in the zip directory,
    and the claims of all members together must fit the budget; the zip reader never
    decompresses a member beyond its directory size (and checks its CRC).

    Returns:
        member name (without ``.npy``) -> array.

    Raises:
        MissingPathError: no such file.
        VolumeSizeError: a member claims more than its size, or the arrays exceed the budget.
        DatasetError: not a zip of plain numeric ``.npy`` members.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"{path}: {what} file does not exist.")
    budget = max_volume_bytes(max_bytes)
    try:
        with zipfile.ZipFile(path) as zf:
            members = [info for info in zf.infolist() if not info.is_dir()]
            total = 0
            plans = []
            for info in members:
                with zf.open(info) as fh:
                    shape, dtype, _ = _npy_header(fh, path, f"{what} member {info.filename}")
                    offset = fh.tell()
                nbytes = math.prod(shape) * dtype.itemsize
                claim = f"{_describe(shape, dtype)} = {nbytes} bytes"
                if offset + nbytes != info.file_size:
                    raise VolumeSizeError(
                        f"{path}: member {info.filename} claims {claim} after a {offset}-byte header, but the zip "
                        f"directory gives it {info.file_size} bytes; the file is corrupt."
                    )
                total += nbytes
                _check_budget(path, what, total, budget, f"members up to {info.filename}: {total} bytes")
                plans.append(info)
            out: dict[str, np.ndarray] = {}
            for info in plans:
                with zf.open(info) as fh:
                    key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                    out[key] = np.lib.format.read_array(fh, allow_pickle=False)
            return out
    except DatasetError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read the {what} as a numpy .npz archive ({exc}).") from exc


# --------------------------------------------------------------------------------------------
# Writing


def _label_dtype(array: np.ndarray, path: Path) -> np.dtype:
    """The smallest NIfTI integer type that holds the label values of ``array``."""
    if array.dtype.kind == "b":
        return np.dtype(np.uint8)
    if array.dtype.kind not in "iu":
        raise DatasetError(f"{path}: expected an integer label map to write, found dtype {array.dtype}.")
    lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
    for dtype in (np.uint8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dtype)
    raise DatasetError(f"{path}: expected label values that fit int32, found values in [{lo}, {hi}].")


def _reset_intensity_fields(header: Any, kind: str, array: np.ndarray) -> None:
    """Make the intensity fields of ``header`` describe ``array`` (values in real units, unscaled)."""
    header.set_slope_inter(None, None)  # the array is written as is: no scaling
    if kind == "image":
        return
    header.set_intent(NIFTI_INTENT_LABEL if kind == "label" else 0, (), name="")
    if kind == "label":
        lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    else:
        lo, hi = 0.0, 1.0
    header["cal_min"], header["cal_max"] = lo, hi


def save_nifti(
    path: str | os.PathLike[str],
    array: np.ndarray,
    affine: np.ndarray,
    header: nib.Nifti1Header | None = None,
    *,
    kind: str = "image",
) -> None:
    """Write ``array`` as NIfTI atomically, keeping the geometry of ``header``.

    Geometry: when ``affine`` equals the header's own affine (``get_best_affine``, within
    :data:`AFFINE_SAME_ATOL`), the header's qform and sform are written unchanged, each with its
    own code, so ``pixdim``, a qform that differs from the sform and a sheared sform all survive.
    Otherwise (a new grid, or no header) both are set from ``affine`` with the header's codes
    (1 = scanner when unset); a qform cannot hold shears, nibabel stores the closest one.

    Intensity fields: scaling is reset (``scl_slope``/``scl_inter`` unset: the array is written
    as is). For ``kind="label"`` the array is stored in the smallest integer type that holds its
    values, ``cal_min``/``cal_max`` are the label range and the intent is ``NIFTI_INTENT_LABEL``
    (1002) with no intent name or parameters; for ``kind="probability"`` ``cal_min``/``cal_max``
    are 0/1 and the intent is none.

    Args:
        path: ``.nii`` or ``.nii.gz`` destination (written through a temporary file).
        array: the data, (X, Y, Z) or (X, Y, Z, C).
        affine: (4, 4) voxel-to-world affine of ``array``.
        header: header of the source volume to keep (copied), or None.
        kind: one of :data:`OUTPUT_KINDS`.

    Raises:
        ConfigError: unknown ``kind``.
        DatasetError: a label map that is not integer-valued.
    """
    if kind not in OUTPUT_KINDS:
        raise ConfigError(f"kind: expected one of {', '.join(map(repr, OUTPUT_KINDS))}, found {kind!r}.")
    path = Path(path)
    array = np.asarray(array)
    if kind == "label":
        array = array.astype(_label_dtype(array, path), copy=False)
    affine = np.asarray(affine, dtype=np.float64)
    if header is None:
        img = nib.Nifti1Image(array, affine)
        img.header.set_qform(affine, code=1)
        img.header.set_sform(affine, code=1)
    else:
        hdr = header.copy()
        hdr.set_data_shape(array.shape)
        hdr.set_data_dtype(array.dtype)
        if np.allclose(hdr.get_best_affine(), affine, rtol=0.0, atol=AFFINE_SAME_ATOL):
            img = nib.Nifti1Image(array, hdr.get_best_affine(), header=hdr)  # header geometry kept verbatim
        else:
            qcode, scode = int(header["qform_code"]) or 1, int(header["sform_code"]) or 1
            img = nib.Nifti1Image(array, affine, header=hdr)
            img.header.set_qform(affine, code=qcode)
            img.header.set_sform(affine, code=scode)
    img.set_data_dtype(array.dtype)
    _reset_intensity_fields(img.header, kind, array)
    suffix = ".nii.gz" if str(path).endswith(".gz") else ".nii"
    with atomic_path(path, suffix=suffix) as tmp:
        nib.save(img, str(tmp))
