"""Input checks and blockwise reading shared by the metric functions.

A probability map and its label are any lazily indexable arrays (numpy, zarr, h5py, an mtbio ``Volume``,
the prediction store's ``ForegroundView``) that expose ``shape`` and ``dtype`` and accept a slice along
axis 0. Nothing here reads more than one block of sections at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

#: probability dtypes the exact fast paths cover (uint8 stores p * 255, the prediction store's encoding)
PROBABILITY_DTYPES = ("uint8", "float16", "float32", "float64")
#: default upper bound on the bytes of one block (probability + label) read at a time
DEFAULT_BLOCK_BYTES = 64 * 2**20


def _where(name: str | None) -> str:
    return f"{name}: " if name else ""


@dataclass(frozen=True)
class PairSpec:
    """Validated description of a (probability, label) pair.

    Attributes:
        shape: the common shape, ``(Y, X)`` or ``(Z, Y, X)``.
        prob_dtype: the probability map's dtype (one of :data:`PROBABILITY_DTYPES`).
        label_dtype: the label's dtype (bool, integer or float holding only 0 and 1).
        name: the probability map's name or path for messages (may be ``None``).
        label_name: the label's name or path for messages (may be ``None``).
    """

    shape: tuple[int, ...]
    prob_dtype: np.dtype
    label_dtype: np.dtype
    name: str | None
    label_name: str | None

    @property
    def num_sections(self) -> int:
        return 1 if len(self.shape) == 2 else self.shape[0]

    @property
    def section_shape(self) -> tuple[int, int]:
        return (self.shape[-2], self.shape[-1])


def as_indexable(array: Any) -> Any:
    """Return ``array`` when it is lazily indexable (has ``shape``, ``dtype`` and ``__getitem__``), else
    ``np.asarray(array)`` (lists, tuples, scalars)."""
    if all(hasattr(array, attr) for attr in ("shape", "dtype", "__getitem__")):
        return array
    return np.asarray(array)


def check_pair(prob: Any, label: Any, *, name: str | None = None, label_name: str | None = None) -> PairSpec:
    """Validate shapes and dtypes without reading any data.

    Raises:
        ValueError: non-numeric or unsupported probability dtype, unsupported label dtype, rank other than 2
            or 3, an empty array, or a probability/label shape mismatch.
    """
    shape = tuple(int(s) for s in prob.shape)
    label_shape = tuple(int(s) for s in label.shape)
    try:
        prob_dtype = np.dtype(prob.dtype)
        label_dtype = np.dtype(label.dtype)
    except TypeError as err:  # e.g. a dtype numpy does not know
        raise ValueError(f"{_where(name)}cannot interpret the array's dtype ({err})") from err
    if prob_dtype.kind not in "uif" or prob_dtype.name not in PROBABILITY_DTYPES:
        if prob_dtype.kind in "uib":
            hint = " (integer probability maps must be uint8 = p*255, the prediction store's encoding)"
        elif prob_dtype.kind in "fc":
            hint = " (use float16, float32 or float64)"
        else:
            hint = " (non-numeric)"
        raise ValueError(
            f"{_where(name)}probability map has dtype {prob_dtype}{hint}; expected one of {PROBABILITY_DTYPES}"
        )
    if label_dtype.kind not in "buif":
        raise ValueError(f"{_where(label_name)}label has non-numeric dtype {label_dtype}; expected bool or 0/1")
    if len(shape) not in (2, 3):
        raise ValueError(
            f"{_where(name)}probability map has shape {shape} (rank {len(shape)}); expected (Y, X) or (Z, Y, X)"
        )
    if shape != label_shape:
        who = f" ({name} vs {label_name})" if name or label_name else ""
        raise ValueError(f"probability map shape {shape} does not match label shape {label_shape}{who}")
    if 0 in shape:
        raise ValueError(f"{_where(name)}probability map is empty (shape {shape})")
    return PairSpec(shape, prob_dtype, label_dtype, name, label_name)


def block_size(spec: PairSpec, prob: Any, max_block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """Sections per read: as many as fit ``max_block_bytes``, rounded down to whole storage chunks along axis 0
    when the probability map exposes ``chunks`` (zarr, h5py), and at least 1."""
    if len(spec.shape) == 2:
        return 1
    per_section = spec.section_shape[0] * spec.section_shape[1] * (spec.prob_dtype.itemsize + 1)
    block = max(1, int(max_block_bytes) // per_section)
    chunks = getattr(prob, "chunks", None)
    if isinstance(chunks, tuple) and chunks and isinstance(chunks[0], int) and chunks[0] > 0:
        block = max(chunks[0], block // chunks[0] * chunks[0])
    return min(block, spec.shape[0])


def iter_blocks(prob: Any, label: Any, spec: PairSpec, block: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(first_section, prob_block, label_block)`` with blocks shaped ``(b, Y, X)``; a 2D pair is one
    block of one section."""
    if len(spec.shape) == 2:
        p = np.asarray(prob[...])
        lab = np.asarray(label[...])
        yield 0, p[None], lab[None]
        return
    for z0 in range(0, spec.shape[0], block):
        z1 = min(z0 + block, spec.shape[0])
        p = np.asarray(prob[z0:z1])
        lab = np.asarray(label[z0:z1])
        expected = (z1 - z0, *spec.section_shape)
        if p.shape != expected or lab.shape != expected:
            raise ValueError(
                f"{_where(spec.name)}reading sections {z0}:{z1} gave shapes {p.shape} / {lab.shape}, expected "
                f"{expected}: the array does not slice like a numpy array"
            )
        yield z0, p, lab


def binary_label(label: np.ndarray, *, name: str | None = None, section: int | None = None) -> np.ndarray:
    """A bool view or copy of a label block that must hold only 0 and 1 (or False / True).

    Raises:
        ValueError: the label holds other values (it was not binarised; read label files with
            ``mtbio.data.labels.open_label_volume``).
    """
    if label.dtype == np.bool_:
        return label
    where = "" if section is None else f" (section {section})"
    if label.dtype.kind == "f" and not np.isfinite(label).all():
        raise ValueError(f"{_where(name)}label contains NaN or inf{where}")
    lo, hi = label.min(), label.max()
    bad = lo < 0 or hi > 1
    if not bad and label.dtype.kind == "f":
        bad = bool(np.count_nonzero((label != 0) & (label != 1)))
    if bad:
        raise ValueError(
            f"{_where(name)}label holds values other than 0 and 1 (min {lo}, max {hi}){where}: binarise it first "
            "(mtbio.data.labels.open_label_volume applies the label rule)"
        )
    if label.dtype == np.uint8:
        return label.view(np.bool_)
    return label != 0
