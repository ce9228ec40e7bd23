"""The one place hrq builds its Poincaré ball."""

from __future__ import annotations

import geoopt
import torch


def poincare_ball(curvature: float) -> geoopt.PoincareBall:
    """geoopt's Poincaré ball ``{x : c||x||^2 < 1}`` with exactly the curvature asked for.

    geoopt stores the curvature through a softplus of a float32 tensor when given a Python float
    (``c=0.1`` becomes ``0.10000005``, a 5e-7 relative error that float64 checks see); a float64
    tensor keeps it exact. Operations still run in the dtype of their inputs.
    """
    if not curvature > 0:
        raise ValueError(f"curvature must be > 0, got {curvature}")
    return geoopt.PoincareBall(c=torch.tensor(float(curvature), dtype=torch.float64))
