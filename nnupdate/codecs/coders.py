"""Entropy-stage choices shared by the quantizing codecs of this package (``coder=...``).

Registers ``elias``, ``golomb`` and ``bitpack`` as selectable coders for every codec,
and defines the wider ``auto`` set used by the sparse and RD codecs: the core
candidates (rans, raw+zstd) plus the run-length and gap coders, the smallest measured
payload winning per tensor.
"""

from __future__ import annotations

from .bitpack import BitPack
from .elias import EliasGammaRLE
from .golomb import GolombRice
from .presets import Tail, entropy_tails, register_coder

register_coder("elias", ((EliasGammaRLE(),),))
register_coder("golomb", ((GolombRice(),),))
register_coder("bitpack", ((BitPack(),),))


def tails(coder: str) -> tuple[Tail, ...]:
    """Candidate tails for ``coder``; ``auto`` = the core set (rans, raw+zstd, golomb,
    bitpack) plus elias."""
    if coder == "auto":
        core = entropy_tails("auto")
        return core + tuple(t for t in ((EliasGammaRLE(),), (GolombRice(),)) if t not in core)
    return entropy_tails(coder)
