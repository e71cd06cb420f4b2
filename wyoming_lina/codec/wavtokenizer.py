"""The assembled WavTokenizer: audio <-> one code per 320 samples (75 codes/s at 24 kHz).

    encode:  wav (B, N) -> SEANet encoder (B, 512, T) -> nearest codebook row -> codes (B, T)
    decode:  codes (B, T) -> codebook rows (B, 512, T) -> Vocos backbone (B, T, 768)
             -> ISTFT head -> wav (B, 320 T)

Submodule names reproduce upstream's generator ``state_dict`` exactly
(``feature_extractor.encodec.{encoder,quantizer,decoder}``, ``backbone``, ``head``) so the
published checkpoint loads strictly. Precision: the encoder, codebook and head run in
float32 (codes must not flip; the ISTFT needs it); only the backbone may be cast to
bf16/fp16 (``set_backbone_dtype``), which is where nearly all decode FLOPs are, and the
head's projection then reads its output in that dtype (float32 products, istft_head.py).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .audio import to_codec_rate
from .backbone import VocosBackbone
from .config import WavTokenizerConfig
from .istft_head import ISTFTHead
from .quantizer import Quantizer
from .seanet import SEANetDecoder, SEANetEncoder
from .streaming import CodecStream, StreamingConfig, Window


class _Encodec(nn.Module):
    def __init__(self, cfg: WavTokenizerConfig):
        super().__init__()
        self.encoder = SEANetEncoder(cfg.n_filters, cfg.dimension, cfg.ratios)
        self.quantizer = Quantizer(cfg.codebook_size, cfg.dimension)
        self.decoder = SEANetDecoder(cfg.n_filters, cfg.dimension)  # unused; for strict loading


class _FeatureExtractor(nn.Module):
    def __init__(self, cfg: WavTokenizerConfig):
        super().__init__()
        self.encodec = _Encodec(cfg)


class WavTokenizer(nn.Module):
    def __init__(self, config: WavTokenizerConfig | None = None):
        super().__init__()
        cfg = self.config = config or WavTokenizerConfig()
        self.feature_extractor = _FeatureExtractor(cfg)
        self.backbone = VocosBackbone(
            cfg.dimension, cfg.dim, cfg.intermediate_dim, cfg.num_layers, cfg.adanorm_num_embeddings
        )
        self.head = ISTFTHead(cfg.dim, cfg.n_fft, cfg.hop_length)

    # ---- sizes -------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def device(self) -> torch.device:
        return self.head.out.weight.device

    @property
    def backbone_dtype(self) -> torch.dtype:
        return self.backbone.embed.weight.dtype

    def set_backbone_dtype(self, dtype: torch.dtype | None) -> WavTokenizer:
        """Store and run the backbone in ``dtype`` (bf16 on CUDA); everything else stays float32
        (the head's projection takes its input in that dtype, ``ISTFTHead.use_input_dtype``)."""
        if dtype is not None:
            if dtype not in (torch.float32, torch.bfloat16, torch.float16):
                raise ValueError(f"backbone dtype must be float32, bfloat16 or float16, got {dtype}")
            self.backbone.to(dtype)
            self.head.use_input_dtype(dtype)
        return self

    @property
    def quantizer(self) -> Quantizer:
        return self.feature_extractor.encodec.quantizer

    # ---- encode ------------------------------------------------------------------------
    @torch.inference_mode()
    def encoder_out(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, N) float audio at 24 kHz -> (B, dimension, ceil(N/320)) pre-quantization frames."""
        if wav.dim() != 2 or wav.shape[-1] == 0:
            raise ValueError(f"expected audio of shape (B, N) with N > 0, got {tuple(wav.shape)}")
        return self.feature_extractor.encodec.encoder(wav.to(self.device, torch.float32).unsqueeze(1))

    @torch.inference_mode()
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, N) float audio at 24 kHz -> (B, ceil(N/320)) long codes."""
        return self.quantizer.encode(self.encoder_out(wav))

    @torch.inference_mode()
    def encode_clip(self, samples: np.ndarray, sample_rate: int) -> torch.Tensor:
        """A voice clip (N,) or (N, C), any rate, int or float PCM -> (T,) long codes on CPU."""
        wav = torch.from_numpy(to_codec_rate(samples, sample_rate, self.sample_rate))
        return self.encode(wav[None])[0].cpu()

    # ---- decode ------------------------------------------------------------------------
    def _check_codes(self, codes: torch.Tensor, bandwidth_id: int) -> None:
        if codes.dim() != 2 or codes.shape[1] == 0 or codes.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"expected integer codes of shape (B, T) with T > 0, got {codes.dtype} {tuple(codes.shape)}"
            )
        if int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size:
            raise ValueError(
                f"codes must lie in [0, {self.codebook_size}), got [{int(codes.min())}, {int(codes.max())}]"
            )
        if not 0 <= int(bandwidth_id) < self.config.adanorm_num_embeddings:
            raise ValueError(f"bandwidth_id must be in [0, {self.config.adanorm_num_embeddings}), got {bandwidth_id}")

    @torch.inference_mode()
    def codes_to_features(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, T) codes -> (B, dimension, T) codebook rows."""
        return self.quantizer.decode(codes.to(self.device).long())

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor, bandwidth_id: int = 0, check: bool = True) -> torch.Tensor:
        """(B, T) codes -> (B, 320 T) float32 audio in the model's device; one bandwidth id per batch.

        ``check=False`` skips validating the codes (which reads them back to the host): for
        codes the engine sampled itself, and inside CUDA-graph capture."""
        if check:
            self._check_codes(codes, bandwidth_id)
        features = self.codes_to_features(codes).to(self.backbone_dtype)
        return self.head(self.backbone(features, int(bandwidth_id)))

    # ---- streaming ---------------------------------------------------------------------
    def new_stream(self, config: StreamingConfig | None = None) -> CodecStream:
        return CodecStream(config, hop_length=self.hop_length)

    @torch.inference_mode()
    def decode_windows(self, windows: list[Window], bandwidth_id: int = 0) -> list[torch.Tensor]:
        """Decode windows from any number of streams; equal sizes share one batched call.

        Returns float32 CPU tensors (320 * size samples), in the order of ``windows``.
        """
        out: list[torch.Tensor | None] = [None] * len(windows)
        by_size: dict[int, list[int]] = {}
        for i, window in enumerate(windows):
            by_size.setdefault(window.size, []).append(i)
        for indices in by_size.values():
            codes = torch.stack([windows[i].codes.to(self.device) for i in indices])  # (b, size)
            audio = self.decode(codes, bandwidth_id).cpu()  # (b, 320 size)
            for row, i in enumerate(indices):
                out[i] = audio[row]
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def decode_streaming(
        self, codes: torch.Tensor, config: StreamingConfig | None = None, push: int = 1, bandwidth_id: int = 0
    ) -> np.ndarray:
        """Reference driver: stream (T,) codes ``push`` at a time through one ``CodecStream``."""
        stream = self.new_stream(config)
        pieces = []
        for t in range(0, codes.shape[0] + 1, push):
            final = t + push > codes.shape[0]
            stream.push(codes[t : t + push])
            while (window := stream.next_window(final=final)) is not None:
                audio = self.decode_windows([window], bandwidth_id)[0]
                pieces.append(stream.take(window, audio))
        return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
