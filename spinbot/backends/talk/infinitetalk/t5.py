"""The UMT5-XXL text encoder through transformers' `UMT5EncoderModel`, loaded from Wan's file format.

File formats (one safetensors file, `t5_text_encoder_model`):
- Wan's own names, as `models_t5_umt5-xxl-enc-bf16.pth` and Kijai's `umt5-xxl-enc-bf16.safetensors` hold them:
  `token_embedding.weight`, `blocks.N.{norm1,norm2}.weight`, `blocks.N.attn.{q,k,v,o}.weight`,
  `blocks.N.pos_embedding.embedding.weight` (UMT5: a relative position bias per layer), `blocks.N.ffn.gate.0.weight`,
  `blocks.N.ffn.{fc1,fc2}.weight`, `norm.weight`; mapped here to transformers' names (gate -> wi_0, fc1 -> wi_1,
  fc2 -> wo: Wan computes fc1(x) * gelu_tanh(gate(x)), transformers gelu_new(wi_0(x)) * wi_1(x)).
- transformers' names (`shared.weight`, `encoder.block.N.layer.0.SelfAttention.q.weight`, ...), loaded as they are.
Sizes (layers, width, heads, FFN, buckets, vocabulary) are read from the file.

The tokenizer is google/umt5-xxl's `tokenizer.json`, in the same folder as the weights (WanVideoWrapper ships it as
configs/T5_tokenizer/tokenizer.json); its post-processor appends `</s>`. The prompt is cleaned as the official
tokenizer wrapper does (HTML entities unescaped twice, whitespace collapsed; the official code also runs
ftfy.fix_text, which changes only mis-encoded text), truncated to 512 tokens with the `</s>`, and encoded without
padding: the official encoder pads to 512 with a mask and trims its output to the prompt's length, which gives the
same rows. The transformer zero-pads the result itself.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from spinbot.backends.talk.infinitetalk.files import TOKENIZER_FILE
from spinbot.backends.talk.infinitetalk.transformer_checkpoint import CheckpointError
from spinbot.backends.talk.infinitetalk.weights import load_checked, read_safetensors, strip_prefix, uninitialised

TEXT_LEN = 512
WAN_TO_HF = (  # per block: Wan's name -> transformers'
    ("norm1.weight", "layer.0.layer_norm.weight"),
    ("attn.q.weight", "layer.0.SelfAttention.q.weight"),
    ("attn.k.weight", "layer.0.SelfAttention.k.weight"),
    ("attn.v.weight", "layer.0.SelfAttention.v.weight"),
    ("attn.o.weight", "layer.0.SelfAttention.o.weight"),
    ("pos_embedding.embedding.weight", "layer.0.SelfAttention.relative_attention_bias.weight"),
    ("norm2.weight", "layer.1.layer_norm.weight"),
    ("ffn.gate.0.weight", "layer.1.DenseReluDense.wi_0.weight"),
    ("ffn.fc1.weight", "layer.1.DenseReluDense.wi_1.weight"),
    ("ffn.fc2.weight", "layer.1.DenseReluDense.wo.weight"),
)


@dataclass(frozen=True)
class UMT5Size:
    """UMT5-XXL by default; read from a file by `from_state`."""

    vocab_size: int = 256384
    d_model: int = 4096
    d_ff: int = 10240
    num_heads: int = 64
    num_layers: int = 24
    num_buckets: int = 32

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> UMT5Size:
        """From transformers' names; a key that is not there keeps the default (and is reported by the load)."""

        def dim(key: str, axis: int, default: int) -> int:
            return state[key].shape[axis] if key in state else default

        bias = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        layers = {int(k.split(".")[2]) for k in state if k.startswith("encoder.block.")}
        return cls(
            vocab_size=dim("shared.weight", 0, cls.vocab_size),
            d_model=dim("shared.weight", 1, cls.d_model),
            d_ff=dim("encoder.block.0.layer.1.DenseReluDense.wi_1.weight", 0, cls.d_ff),
            num_heads=dim(bias, 1, cls.num_heads),
            num_layers=max(layers) + 1 if layers else cls.num_layers,
            num_buckets=dim(bias, 0, cls.num_buckets),
        )

    def config(self):
        from transformers import UMT5Config

        return UMT5Config(
            vocab_size=self.vocab_size,
            d_model=self.d_model,
            d_kv=self.d_model // self.num_heads,
            d_ff=self.d_ff,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            relative_attention_num_buckets=self.num_buckets,
            relative_attention_max_distance=128,
            feed_forward_proj="gated-gelu",
            layer_norm_epsilon=1e-6,
            dropout_rate=0.0,
            is_encoder_decoder=False,
            use_cache=False,
        )


def hf_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Wan's names -> transformers' (a file in transformers' names passes through)."""
    if not any(key == "token_embedding.weight" or key.startswith("blocks.") for key in state):
        return state
    out = {wan_to_hf(key): value for key, value in state.items()}
    if "shared.weight" in out:
        out["encoder.embed_tokens.weight"] = out["shared.weight"]  # tied in transformers
    return out


def wan_to_hf(key: str) -> str:
    if key == "token_embedding.weight":
        return "shared.weight"
    if key == "norm.weight":
        return "encoder.final_layer_norm.weight"
    if m := re.match(r"blocks\.(\d+)\.(.*)", key):
        for wan, hf in WAN_TO_HF:
            if m[2] == wan:
                return f"encoder.block.{m[1]}.{hf}"
    return key


def hf_to_wan(key: str) -> str:
    """transformers' name -> Wan's, to name a missing key as the file would."""
    if key in ("shared.weight", "encoder.embed_tokens.weight"):
        return "token_embedding.weight"
    if key == "encoder.final_layer_norm.weight":
        return "norm.weight"
    if m := re.match(r"encoder\.block\.(\d+)\.(.*)", key):
        for wan, hf in WAN_TO_HF:
            if m[2] == hf:
                return f"blocks.{m[1]}.{wan}"
    return key


def clean_prompt(text: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text)).strip()).strip()


class TextEncoder(nn.Module):
    """Prompt -> UMT5 features [tokens, d_model] (tokens <= 512, `</s>` included)."""

    def __init__(self, model: nn.Module, tokenizer):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer

    @torch.no_grad()
    def forward(self, prompt: str) -> torch.Tensor:
        ids = self.tokenizer.encode(clean_prompt(prompt)).ids
        device = next(self.model.parameters()).device
        out = self.model(input_ids=torch.tensor([ids], device=device)).last_hidden_state
        return out[0]


def load_tokenizer(path: Path):
    from tokenizers import Tokenizer

    file = path.parent / TOKENIZER_FILE
    if not file.is_file():
        raise CheckpointError(
            f"UMT5 tokenizer not found: {file} (google/umt5-xxl's tokenizer.json, beside {path.name})"
        )
    tokenizer = Tokenizer.from_file(str(file))
    tokenizer.enable_truncation(TEXT_LEN)
    tokenizer.no_padding()
    return tokenizer


def load_text_encoder(
    path: Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> TextEncoder:
    tokenizer = load_tokenizer(path)
    original = strip_prefix(read_safetensors(path, "UMT5 text encoder"), ("model.",))
    state = hf_names(original)
    from transformers import UMT5EncoderModel

    with uninitialised(dtype):
        model = UMT5EncoderModel(UMT5Size.from_state(state).config())
    load_checked(model, state, "UMT5 text encoder", path, file_name=lambda k: k if state is original else hf_to_wan(k))
    return TextEncoder(model.eval().requires_grad_(False).to(device), tokenizer)
