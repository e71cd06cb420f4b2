"""Full-size models with random weights, for GPU checks and benchmarks.

The published Lina weights cannot be downloaded here, so benchmarks build the published
shapes (the key manifest in shared/fixtures) and fill them with random values scaled so
activations, decays and logits look like a trained model's (not all-zero, not exploding).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from wyoming_lina.model import LinaModel, config_from_state_dict

DEFAULT_MANIFEST = (
    Path(os.environ.get("WYOMING_LINA_FIXTURES", Path(__file__).resolve().parent.parent.parent / "shared/fixtures"))
    / "lina-tiny/full-size-keys.json"
)


def full_size_lina_config(manifest: Path | None = None):
    path = Path(manifest or DEFAULT_MANIFEST)
    keys = json.loads(path.read_text())["state_dict"]
    return config_from_state_dict({k.removeprefix("model."): torch.empty(v, device="meta") for k, v in keys.items()})


@torch.no_grad()
def randomize_lina(model: LinaModel, seed: int = 0) -> LinaModel:
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("rotary.freqs"):
            dim = 2 * p.numel()
            values = 1.0 / 10000 ** (torch.arange(0, dim, 2).float() / dim)
        elif name.endswith("gk_proj.1.bias"):
            values = torch.empty(p.shape).uniform_(-2, 4, generator=gen)
        elif "norm" in name or name.split(".")[-2].startswith("ln_"):
            base = 1.0 if name.endswith("weight") else 0.0
            values = base + 0.05 * torch.randn(p.shape, generator=gen)
        elif p.dim() >= 2:
            fan_in = p.shape[-1] if "embed" not in name else 1
            values = torch.randn(p.shape, generator=gen) / math.sqrt(fan_in)
            if name == "logits_head.weight":
                values *= 3
        else:
            values = 0.02 * torch.randn(p.shape, generator=gen)
        p.copy_(values.to(p.dtype))
    return model


def random_full_size_lina(device="cpu", seed: int = 0, manifest: Path | None = None) -> LinaModel:
    model = LinaModel(full_size_lina_config(manifest))
    return randomize_lina(model, seed).to(device).eval().requires_grad_(False)
