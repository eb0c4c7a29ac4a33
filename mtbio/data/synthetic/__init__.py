"""Synthetic EM domains: seeded EM-like volumes with mitochondria labels, mtbio's built-in default data.

``synthesize(style, shape, seed)`` renders one volume; ``generate_synthetic(out_dir)`` writes the source /
target / held-out target layout that ``mtbio synth`` makes. See ``docs/synthetic.md``.
"""

from __future__ import annotations

from mtbio.data.synthetic.domains import PRESETS, SOURCE, TARGET, TARGET_HARD, DomainStyle
from mtbio.data.synthetic.io import generate_synthetic, read_manifest
from mtbio.data.synthetic.render import synthesize

__all__ = [
    "DomainStyle",
    "SOURCE",
    "TARGET",
    "TARGET_HARD",
    "PRESETS",
    "synthesize",
    "generate_synthetic",
    "read_manifest",
]
