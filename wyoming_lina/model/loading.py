"""Reading Lina checkpoints: Lightning ``.ckpt``, plain state dicts, safetensors.

The configuration is derived from tensor shapes, then every tensor must match by name
and shape (strict). Pickled files are opened with ``weights_only=True``; executing pickled
code is allowed only for a file the caller vouches for (``trusted=True``, e.g. a download
whose checksum was verified).
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..state_dicts import state_dict_mismatches
from .config import check_hyper_parameters, config_from_state_dict
from .lina import LinaModel

_LOGGER = logging.getLogger(__name__)
PREFIX = "model."


def read_checkpoint(path: str | Path, trusted: bool = False) -> tuple[dict[str, torch.Tensor], dict]:
    """Return (state dict without the ``model.`` prefix, hyper_parameters or {})."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Lina checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return _strip_prefix(load_file(str(path))), {}
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not trusted:
            raise CheckpointError(
                f"{path} needs arbitrary code to unpickle and is not trusted; "
                f"convert it to safetensors first, or trust it (wyoming-lina: --trust-checkpoints) ({err.__class__.__name__})"
            ) from err
        _LOGGER.warning("%s holds non-tensor objects; loading the trusted file with full unpickling", path)
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch.load raises many types (EOFError, RuntimeError, IndexError...)
        raise CheckpointError(f"{path} is not a PyTorch checkpoint: {err}") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a checkpoint dict")
    hparams = data.get("hyper_parameters") if isinstance(data.get("hyper_parameters"), dict) else {}
    state = data["state_dict"] if isinstance(data.get("state_dict"), dict) else data
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} contains no tensors: not a model checkpoint")
    return _strip_prefix(tensors), hparams


def _strip_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if all(k.startswith(PREFIX) for k in sd):
        return {k[len(PREFIX) :]: v for k, v in sd.items()}
    return dict(sd)


def check_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Raise CheckpointError naming every missing, unexpected or mis-shaped tensor."""
    problems = state_dict_mismatches(model, sd)
    if problems:
        raise CheckpointError("checkpoint does not match the Lina architecture: " + "; ".join(problems))


def model_from_state_dict(sd: dict[str, torch.Tensor], hparams: dict | None = None) -> LinaModel:
    config = config_from_state_dict(sd)
    for mismatch in check_hyper_parameters(config, hparams or {}):
        _LOGGER.warning("checkpoint %s (using the tensor shapes)", mismatch)
    with torch.device("meta"):
        model = LinaModel(config)
    check_state_dict(model, sd)
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def load_lina(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, trusted: bool = False
) -> LinaModel:
    """Load a Lina checkpoint strictly. ``dtype`` (e.g. torch.bfloat16 on CUDA) applies to the
    large matrices only; norms, convs, gates and the recurrent state stay float32."""
    sd, hparams = read_checkpoint(path, trusted=trusted)
    model = model_from_state_dict(sd, hparams).to(device)
    if dtype is not None and dtype != torch.float32:
        cast_weights(model, dtype)
    return model


def cast_weights(model: LinaModel, dtype: torch.dtype) -> LinaModel:
    """Store the big matrices in ``dtype``; keep norms, convs, position tables and gk gates in float32."""
    keep_fp32 = ("norm", "ln_", "conv", "gk_proj", "pos_embed", "rotary", "g_norm_swish_gate")
    for name, param in model.named_parameters():
        if param.dim() >= 2 and not any(part in name for part in keep_fp32):
            param.data = param.data.to(dtype)
    return model


def save_safetensors(model: LinaModel, path: str | Path) -> None:
    """Write the weights (float32, upstream names) so restarts load without unpickling."""
    from safetensors.torch import save_file

    save_file({k: _alone(v.float().contiguous().cpu()) for k, v in model.state_dict().items()}, str(path))


def _alone(t: torch.Tensor) -> torch.Tensor:
    """t, or a copy of it where it is a view of a larger tensor (a prepared model's weights are
    views of its fused copies, ``layers.share_rows``; older safetensors refuse shared memory)."""
    return t if t.untyped_storage().nbytes() == t.numel() * t.element_size() else t.clone()
