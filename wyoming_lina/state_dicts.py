"""Comparing a checkpoint's tensors with what a module expects, in words a user can act on.

Shared by the Lina and WavTokenizer loaders, which load strictly and must name every
missing, unexpected or mis-shaped tensor rather than fail with a bare KeyError.
"""

from __future__ import annotations

import torch


def state_dict_mismatches(module: torch.nn.Module, sd: dict[str, torch.Tensor], limit: int = 20) -> list[str]:
    """One line per kind of problem ('missing (2): a, b'); empty when the tensors fit exactly."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {list(sd[k].shape)} != model {list(v.shape)}"
        for k, v in expected.items()
        if k in sd and sd[k].shape != v.shape
    )
    return [
        f"{label} ({len(items)}): " + ", ".join(items[:limit]) + (" ..." if len(items) > limit else "")
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
        if items
    ]
