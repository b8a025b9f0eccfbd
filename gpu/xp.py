"""The array module: CuPy on a GPU when present and enabled, NumPy otherwise.

Numerics are written once against ``xp`` (the module) and ``ndimage`` (its SciPy-compatible
filters). The CPU path is the reference; importing this module never needs CUDA.
"""

from __future__ import annotations

import os
from types import ModuleType

import numpy as np
from scipy import ndimage as cpu_ndimage


def cupy_or_none() -> ModuleType | None:
    """CuPy if it imports and sees a device; None otherwise (no CUDA, no GPU, disabled)."""
    if os.environ.get("AOMAS_GPU", "auto").lower() in ("0", "off", "false", "no"):
        return None
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        return cupy
    except Exception:  # ImportError, or CUDA present but no usable driver
        return None


def array_module(prefer_gpu: bool = True) -> ModuleType:
    return (cupy_or_none() if prefer_gpu else None) or np


def ndimage_for(xp: ModuleType) -> ModuleType:
    if xp is np:
        return cpu_ndimage
    import cupyx.scipy.ndimage

    return cupyx.scipy.ndimage


def to_numpy(array) -> np.ndarray:
    return array.get() if hasattr(array, "get") else np.asarray(array)
