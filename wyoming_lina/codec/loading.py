"""Reading WavTokenizer weights strictly: Lightning ``.ckpt``, plain state dict, safetensors.

The published file is a 1.75 GB Lightning checkpoint whose ``state_dict`` also holds the
discriminators and loss buffers used in training. Only keys starting with
``feature_extractor.``, ``backbone.`` or ``head.`` (the generator, 289 tensors) are kept;
then every kept tensor must match the model built from the yaml by name and shape, and
every model tensor must be present. Mismatches raise ``CheckpointError`` naming the keys.

Weight norm: the checkpoint uses the legacy ``weight_g``/``weight_v`` names, which is what
our modules use. Files saved with the newer parametrization API
(``...parametrizations.weight.original0/1``) are renamed to the legacy names on load.

Pickled checkpoints are opened with ``weights_only=True``. ``save_codec_safetensors``
writes the generator once (with the config in the metadata) so later starts need neither
unpickling nor the 1.75 GB file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..state_dicts import state_dict_mismatches
from .config import WavTokenizerConfig, read_config
from .wavtokenizer import WavTokenizer

_LOGGER = logging.getLogger(__name__)
GENERATOR_PREFIXES = ("feature_extractor.", "backbone.", "head.")
CONFIG_METADATA_KEY = "wavtokenizer_config"
_PARAMETRIZED = {".parametrizations.weight.original0": ".weight_g", ".parametrizations.weight.original1": ".weight_v"}


def read_codec_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(all tensors of the file, safetensors metadata or {}); raises CheckpointError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"WavTokenizer checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types (UnpicklingError, EOFError, RuntimeError...)
        raise CheckpointError(f"{path} is not a loadable PyTorch checkpoint (weights_only=True): {err}") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a checkpoint dict")
    state = data["state_dict"] if isinstance(data.get("state_dict"), dict) else data
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, {}


def generator_state_dict(tensors: dict[str, torch.Tensor], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Keep generator keys (dropping training-only ones), legacy weight-norm names, float32."""
    kept, dropped = {}, 0
    for key, value in tensors.items():
        if not key.startswith(GENERATOR_PREFIXES):
            dropped += 1
            continue
        for new, legacy in _PARAMETRIZED.items():
            if key.endswith(new):
                key = key[: -len(new)] + legacy
        kept[key] = value.float() if value.is_floating_point() else value
    if not kept:
        raise CheckpointError(f"{source} holds no WavTokenizer generator tensors (feature_extractor./backbone./head.)")
    if dropped:
        _LOGGER.debug("%s: dropped %d training-only tensors", source, dropped)
    return kept


def check_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise CheckpointError naming every missing, unexpected or mis-shaped tensor."""
    problems = state_dict_mismatches(model, sd, limit=12)
    if problems:
        raise CheckpointError(f"{source} does not match the WavTokenizer config: " + "; ".join(problems))


def codec_from_state_dict(
    config: WavTokenizerConfig, sd: dict[str, torch.Tensor], source: str = "checkpoint"
) -> WavTokenizer:
    """Build on the meta device (no memory), check strictly, then adopt the tensors."""
    with torch.device("meta"):
        codec = WavTokenizer(config)
    check_state_dict(codec, sd, source)
    codec.load_state_dict(sd, strict=True, assign=True)
    inited = sd["feature_extractor.encodec.quantizer.vq.layers.0._codebook.inited"]
    if not bool((inited != 0).all()):
        raise CheckpointError(f"{source}: the codebook was never initialised (inited = 0): not a trained codec")
    return codec.eval().requires_grad_(False)


def load_codec(
    config_path: str | Path | None,
    checkpoint_path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> WavTokenizer:
    """Load a WavTokenizer strictly. ``dtype`` (e.g. torch.bfloat16 on CUDA) applies to the
    backbone only; encoder, codebook and ISTFT head stay float32.

    ``config_path`` may be None for a safetensors file written by ``save_codec_safetensors``
    (its config is in the metadata); otherwise None means the released medium model's sizes.
    """
    tensors, metadata = read_codec_file(checkpoint_path)
    source = Path(checkpoint_path).name
    if config_path is not None:
        config = read_config(config_path)
    elif CONFIG_METADATA_KEY in metadata:
        try:
            config = WavTokenizerConfig.from_json(metadata[CONFIG_METADATA_KEY])
        except (ValueError, TypeError, KeyError) as err:
            raise CheckpointError(f"{source}: bad {CONFIG_METADATA_KEY} metadata: {err}") from err
    else:
        config = WavTokenizerConfig()
    codec = codec_from_state_dict(config, generator_state_dict(tensors, source), source)
    codec = codec.to(device).set_backbone_dtype(dtype)
    codec.feature_extractor.encodec.encoder.model[13].lstm.flatten_parameters()
    return codec


def save_codec_safetensors(codec: WavTokenizer, path: str | Path) -> None:
    """Write the generator (float32, upstream key names, config in the metadata)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().float().contiguous().cpu() for k, v in codec.state_dict().items()}
    save_file(tensors, str(path), metadata={CONFIG_METADATA_KEY: codec.config.to_json()})
