"""WavTokenizer sizes, read from the upstream yaml layout.

Upstream trains from a Lightning CLI yaml (``model.init_args.{feature_extractor, backbone,
head}``, each with ``class_path`` and ``init_args``) and hard-codes some sizes in Python
(SEANet ``n_filters=32``, ``dimension=512``). The defaults here are exactly those
hard-coded values and the released medium yaml, so ``WavTokenizerConfig()`` is the real
75-token/s speech codec. Two optional extra keys, ``n_filters`` and ``dimension``, let the
tiny test fixture shrink those sizes. Everything is validated before any tensor is built.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from ..errors import CheckpointError

# yaml init_args that matter only for training; accepted and ignored.
_TRAINING_ONLY = {
    "feature_extractor": {"encodec_model", "bandwidths", "train_codebooks", "vq_kmeans"},
    "backbone": {"layer_scale_init_value"},
    "head": set(),
}
_CLASS_NAMES = {"feature_extractor": "EncodecFeatures", "backbone": "VocosBackbone", "head": "ISTFTHead"}
GROUPNORM_GROUPS = 32  # upstream pos_net GroupNorms always use 32 groups


@dataclass(frozen=True)
class WavTokenizerConfig:
    """Sizes of the generator (encoder, codebook, decoder). Defaults = the released medium model."""

    sample_rate: int = 24000
    n_filters: int = 32  # SEANet base channels (upstream hard-codes 32)
    dimension: int = 512  # encoder output = codebook dim = backbone input (hard-coded 512)
    ratios: tuple[int, ...] = (8, 5, 4, 2)  # yaml 'dowmsamples' (sic); the encoder applies them reversed
    codebook_size: int = 4096  # yaml 'vq_bins'
    num_quantizers: int = 1
    dim: int = 768  # backbone width
    intermediate_dim: int = 2304
    num_layers: int = 12
    adanorm_num_embeddings: int = 4  # rows of every AdaLN scale/shift table = number of bandwidth ids
    n_fft: int = 1280
    hop_length: int = 320
    padding: str = "same"

    def __post_init__(self) -> None:
        validate(self)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WavTokenizerConfig:
        data = json.loads(text)
        data["ratios"] = tuple(data["ratios"])
        return cls(**data)


def validate(cfg: WavTokenizerConfig) -> None:
    """Raise CheckpointError for sizes this implementation cannot (or upstream would not) build."""
    problems = []
    for name in ("sample_rate", "n_filters", "dimension", "codebook_size", "dim", "intermediate_dim"):
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) <= 0:
            problems.append(f"{name} must be a positive integer, got {getattr(cfg, name)!r}")
    if cfg.num_layers < 0 or cfg.adanorm_num_embeddings < 1:
        problems.append("num_layers must be >= 0 and adanorm_num_embeddings >= 1")
    if not cfg.ratios or any(not isinstance(r, int) or r < 1 for r in cfg.ratios):
        problems.append(f"dowmsamples must be positive integers, got {cfg.ratios!r}")
    elif math.prod(cfg.ratios) != cfg.hop_length:
        problems.append(f"product of dowmsamples {cfg.ratios} = {math.prod(cfg.ratios)} != hop_length {cfg.hop_length}")
    if cfg.num_quantizers != 1:
        problems.append(f"num_quantizers must be 1 (single-codebook WavTokenizer), got {cfg.num_quantizers}")
    if cfg.dim % GROUPNORM_GROUPS:
        problems.append(f"backbone dim {cfg.dim} must be divisible by {GROUPNORM_GROUPS} (GroupNorm groups)")
    if cfg.padding != "same":
        problems.append(f"head padding {cfg.padding!r} is not supported (only 'same')")
    if cfg.n_fft <= cfg.hop_length or (cfg.n_fft - cfg.hop_length) % 2:
        problems.append(f"n_fft {cfg.n_fft} must exceed hop_length {cfg.hop_length} by an even number")
    if problems:
        raise CheckpointError("invalid WavTokenizer config: " + "; ".join(problems))


def read_config(path: str | Path) -> WavTokenizerConfig:
    """Read an upstream WavTokenizer yaml (the ``model:`` section; data/trainer are ignored)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise CheckpointError(f"cannot read WavTokenizer config {path}: {err}") from err
    return config_from_yaml_dict(data, source=str(path))


def config_from_yaml_dict(data: object, source: str = "config") -> WavTokenizerConfig:
    """Build the config from the parsed yaml; raise CheckpointError naming what is wrong."""
    try:
        model_args = data["model"]["init_args"]  # type: ignore[index]
        sections = {name: model_args[name] for name in _CLASS_NAMES}
    except (KeyError, TypeError) as err:
        raise CheckpointError(
            f"{source}: not a WavTokenizer yaml (needs model.init_args.feature_extractor/backbone/head): missing {err}"
        ) from err
    args = {}
    for name, section in sections.items():
        class_path = section.get("class_path", "") if isinstance(section, dict) else ""
        if not class_path.endswith(_CLASS_NAMES[name]):
            raise CheckpointError(
                f"{source}: {name}.class_path is {class_path!r}; only {_CLASS_NAMES[name]} is supported"
            )
        args[name] = dict(section.get("init_args") or {})
    fe, bb, head = args["feature_extractor"], args["backbone"], args["head"]
    known = {
        "feature_extractor": {"dowmsamples", "vq_bins", "num_quantizers", "n_filters", "dimension"},
        "backbone": {"input_channels", "dim", "intermediate_dim", "num_layers", "adanorm_num_embeddings"},
        "head": {"dim", "n_fft", "hop_length", "padding"},
    }
    for name, section_args in args.items():
        unknown = set(section_args) - known[name] - _TRAINING_ONLY[name]
        if unknown:
            raise CheckpointError(f"{source}: unknown {name}.init_args keys {sorted(unknown)}")
    defaults = WavTokenizerConfig()
    dimension = fe.get("dimension", defaults.dimension)
    dim = bb.get("dim", defaults.dim)
    if bb.get("input_channels", dimension) != dimension:
        raise CheckpointError(
            f"{source}: backbone.input_channels {bb['input_channels']} != feature_extractor dimension {dimension}"
            " (the codebook dimension; 512 unless the extra 'dimension' key says otherwise)"
        )
    if head.get("dim", dim) != dim:
        raise CheckpointError(f"{source}: head.dim {head['dim']} != backbone.dim {dim}")
    try:
        return WavTokenizerConfig(
            sample_rate=int(model_args.get("sample_rate", defaults.sample_rate)),
            n_filters=fe.get("n_filters", defaults.n_filters),
            dimension=dimension,
            ratios=tuple(fe.get("dowmsamples", defaults.ratios)),
            codebook_size=fe.get("vq_bins", defaults.codebook_size),
            num_quantizers=fe.get("num_quantizers", defaults.num_quantizers),
            dim=dim,
            intermediate_dim=bb.get("intermediate_dim", defaults.intermediate_dim),
            num_layers=bb.get("num_layers", defaults.num_layers),
            adanorm_num_embeddings=bb.get("adanorm_num_embeddings", defaults.adanorm_num_embeddings),
            n_fft=head.get("n_fft", defaults.n_fft),
            hop_length=head.get("hop_length", defaults.hop_length),
            padding=head.get("padding", defaults.padding),
        )
    except CheckpointError as err:
        raise CheckpointError(f"{source}: {err}") from err
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: bad value in WavTokenizer config: {err}") from err
