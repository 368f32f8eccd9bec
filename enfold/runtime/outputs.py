"""Model outputs checked before they are answered: a non-finite value is an error, never a NaN.

JSON has no NaN or Infinity (Python's encoder writes bare ``NaN`` tokens that clients cannot
parse, Starlette's refuses them with a bare 500), and a NaN pixel silently becomes black in a
PNG. The server checks every request's output rows with :func:`check_finite` (the batcher runs
it per request, so one bad row fails only its own request) and answers a 500 whose message says
the model produced non-finite values.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

# the inference session raises the same class, so one handler answers both
from enfold.errors import NonFiniteOutputError


def non_finite_message(model: str) -> str:
    return (f"the model {model!r} produced non-finite values (NaN or infinity) for this input; "
            "the model or its export is broken (re-export it, or check enfold validate)")


def check_finite(rows: torch.Tensor | np.ndarray, model: str) -> None:
    """Raise :class:`NonFiniteOutputError` when ``rows`` hold NaN or infinity."""
    finite = (torch.isfinite(rows).all().item() if isinstance(rows, torch.Tensor)
              else bool(np.isfinite(rows).all()))
    if not finite:
        raise NonFiniteOutputError(non_finite_message(model))


def strict_json(value: Any) -> bytes:
    """``value`` as JSON bytes; a NaN or infinity anywhere is :class:`NonFiniteOutputError`
    (``allow_nan=False``), never a bare ``NaN`` token."""
    try:
        return json.dumps(value, allow_nan=False).encode()
    except ValueError as exc:
        raise NonFiniteOutputError(f"the answer holds non-finite values ({exc}); the model "
                                   "produced NaN or infinity") from None
