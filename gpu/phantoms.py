"""The two phantom families behind one call: family A (``gpu.phantom``) and family B
(``gpu.phantom_b``), designed apart so that accuracy is never measured on one generator alone."""

from __future__ import annotations

from gpu.phantom import Phantom, PhantomSpec, make_phantom
from gpu.phantom_b import FamilyBSpec, make_phantom_b

FAMILIES = ("A", "B")


def make_phantom_of(spec: PhantomSpec | FamilyBSpec) -> Phantom:
    if isinstance(spec, FamilyBSpec):
        return make_phantom_b(spec)
    return make_phantom(spec)
