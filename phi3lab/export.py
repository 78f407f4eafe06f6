"""A trained run as an ONNX Runtime GenAI folder, and generating with one.

``export_onnx(run)`` hands the run to ONNX Runtime GenAI's own model builder
(``onnxruntime_genai.models.builder``), in one of two layouts:

* ``merged`` (default): the adapter folded into the base weights (``merge_and_save``), then built;
* ``adapter``: the base model built with the adapter's LoRA layers (the builder's ``adapter_path``), whose
  weights are then moved into ``adapter.onnx_adapter``. The model alone answers like the base model;
  with the adapter file active (ONNX Runtime GenAI's ``Adapters``) like the fine-tuned one.

Precisions: fp32 and int4 for CPU, fp16 and int4 for CUDA. int4 quantizes the weight matrices to 4 bits
(in blocks of 32, each with its own scale): about 7x smaller than fp32 and several times faster on a CPU,
at some cost in quality, which ``benchmarks/export_fidelity.py`` measures.

The folder carries the run's own tokenizer and chat template, and ``genai_config.json`` lists the
end-of-turn token among its stop tokens, so the export stops where the fine-tuned model stops. It is
written atomically, last of all a manifest with a fingerprint of what it was built from (the adapter's
files, the base model's files, the options, the builder's version): exporting an unchanged run again
finds the manifest and returns at once.

``load_export(folder)`` loads an export for generating: ``OnnxChatModel.generate`` (replies to
conversations, as ``phi3lab.generation.generate``) and ``generate_ids`` (token ids for several prompts at once,
with a callback per token, which the local endpoint streams from).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from . import models
from .errors import Phi3LabError
from .io import atomic_directory, atomic_write_json
from .runs import RunFolder, RunNotFoundError, find_run, run_folder, runs_root, training_runs

FORMAT = "onnx"
PRECISIONS = {"cpu": ("fp32", "int4"), "cuda": ("fp16", "int4")}
LAYOUTS = ("merged", "adapter")
SUPPORTED_ARCHITECTURES = ("Phi3ForCausalLM",)  # Phi-3/3.5-mini, Phi-4-mini and the stand-in
MANIFEST = "phi3lab-export.json"
ADAPTER_FILE = "adapter.onnx_adapter"
ADAPTER_NAME_IN_RUNTIME = "fine-tuned"
BUILD_LOG = "build.log"
EXPORT_VERSION = 2  # bump when what export_onnx writes changes, so older exports are rebuilt (2: pruned lm_head)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
# Weight files over this size enter the fingerprint by size and modification time: hashing the bytes
# of a 7 GB base model would make "an unchanged run exports instantly" take a minute.
HASH_BYTES_LIMIT = 64 * 1024 * 1024
# LoRA sub-layers the builder names in an unfused Phi-3 layer (it splits qkv_proj and gate_up_proj).
_LORA_PROJECTIONS = {"attn": ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj"),
                     "mlp": ("gate_proj", "up_proj", "down_proj", "gate_up_proj")}


class ExportError(Phi3LabError):
    """A run that cannot be exported, an export that cannot be loaded, or options this machine cannot build."""


@dataclass(frozen=True)
class ExportOptions:
    precision: str = "int4"
    device: str = "cpu"
    layout: str = "merged"

    @property
    def variant(self) -> str:
        """The export's folder name under the run's ``exports/``: ``onnx-int4-cpu``, ``onnx-fp32-cpu-adapter``."""
        return f"{FORMAT}-{self.precision}-{self.device}" + ("-adapter" if self.layout == "adapter" else "")

    def check(self) -> None:
        """One clear error for a precision, device or layout this machine cannot build."""
        if self.device not in PRECISIONS:
            raise ExportError(f"unknown device '{self.device}'. Choose one of: {', '.join(PRECISIONS)}.")
        if self.precision not in PRECISIONS[self.device]:
            owners = [device for device, offered in PRECISIONS.items() if self.precision in offered]
            hint = f" ({self.precision} is for {' and '.join(owners)})" if owners else ""
            raise ExportError(f"precision '{self.precision}' is not offered for {self.device}{hint}. "
                              f"For {self.device} choose one of: {', '.join(PRECISIONS[self.device])}.")
        if self.layout not in LAYOUTS:
            raise ExportError(f"unknown layout '{self.layout}'. Choose one of: {', '.join(LAYOUTS)}.")
        if self.device == "cuda":
            _check_cuda()


def _check_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise ExportError("a CUDA export (fp16 or int4 for CUDA) needs an NVIDIA GPU with CUDA, and this machine has "
                          "none. Fix: export for the CPU instead (--device cpu with --precision int4 or fp32).")
    import onnxruntime_genai as og

    if not og.is_cuda_available():
        raise ExportError("this machine has CUDA, but the installed onnxruntime-genai is the CPU build, which cannot "
                          "run a CUDA export. Fix: pip install onnxruntime-genai-cuda (same version), or export "
                          "for the CPU (--device cpu).")


@dataclass
class Export:
    """One export folder: where it is, what built it, and whether this call built it or found it."""

    folder: Path
    manifest: dict
    reused: bool
    seconds: float

    @property
    def adapter_file(self) -> Path | None:
        name = self.manifest.get("adapter_file")
        return self.folder / name if name else None

    @property
    def size_mb(self) -> float:
        return sum(self.manifest["files"].values()) / 1e6

    def __str__(self) -> str:
        how = "unchanged, reused" if self.reused else f"built in {self.seconds:.0f} s"
        return (f"{self.manifest['precision']} {self.manifest['device']} export of run '{self.manifest['run']}' "
                f"({self.manifest['layout']}, {self.size_mb:.0f} MB, {how}): {self.folder}")


# ----- building -----------------------------------------------------------------------------------
def export_onnx(run: str | os.PathLike | RunFolder | None = None, precision: str = "int4", device: str = "cpu",
                layout: str = "merged", out_dir: str | os.PathLike | None = None, force: bool = False) -> Export:
    """Export a trained run (by default the latest) to an ONNX Runtime GenAI folder; see the module docstring.

    The folder is ``runs/<run>/exports/<variant>`` unless ``out_dir`` is given. An unchanged run with the
    same options is not rebuilt (``force=True`` rebuilds).
    """
    options = ExportOptions(precision, device, layout)
    options.check()
    run = trained_run(run)
    base = base_model_folder(run)
    check_architecture(base)
    out = Path(out_dir) if out_dir else run.export_dir(options.variant)
    fingerprint = _fingerprint(run, base, options)
    started = time.perf_counter()
    manifest = None if force else _reusable_manifest(out, fingerprint)
    if manifest is not None:
        return Export(out, manifest, reused=True, seconds=time.perf_counter() - started)
    with atomic_directory(out) as tmp, tempfile.TemporaryDirectory(prefix="phi3lab-export-") as scratch:
        _build(run, base, options, tmp, Path(scratch))
        stops = _finish_folder(run, base, tmp)
        if options.layout == "adapter":
            _move_lora_to_adapter_file(tmp)
        manifest = _write_manifest(tmp, run, options, fingerprint, stops)
    return Export(out, manifest, reused=False, seconds=time.perf_counter() - started)


def trained_run(run: str | os.PathLike | RunFolder | None) -> RunFolder:
    """The run to export: a clear error when it does not exist or has no finished adapter."""
    if run is not None and not run_folder(run).folder.is_dir():
        names = ", ".join(r.name for r in training_runs()) or "none yet"
        raise RunNotFoundError(f"there is no run '{run}' (looked in {run_folder(run).folder}; finished runs under "
                               f"{runs_root()}: {names}). Fix: name one of those, or train it first "
                               "(notebook 02 or `phi3lab train --run-name NAME`).")
    return find_run(run)


def base_model_folder(run: RunFolder) -> Path:
    """A local folder with the run's base model: the stand-in's cache, or the hub model's downloaded snapshot."""
    source = models.model_source(run.config().model)
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.model", "*.jinja", "*.txt"]))


def check_architecture(base: Path) -> None:
    """Refuse what the builder would mis-build, before it spends minutes on it."""
    config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    architecture = (config.get("architectures") or ["(none given)"])[0]
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise ExportError(f"the base model in {base} is a {architecture}; the course's ONNX export supports "
                          f"{', '.join(SUPPORTED_ARCHITECTURES)} (Phi-3-mini, Phi-3.5-mini, Phi-4-mini and the "
                          "offline stand-in). Fix: train on one of the catalog models (phi3lab model list).")
    rope = config.get("rope_scaling") or config.get("rope_parameters") or {}
    long_rope = config.get("max_position_embeddings") != config.get("original_max_position_embeddings", 4096)
    if long_rope and "long_factor" not in rope:
        raise ExportError(f"the base model in {base} has max_position_embeddings != original_max_position_embeddings "
                          "but no LongRoPE factors; the builder reads that as LongRoPE and fails. Fix: set "
                          "original_max_position_embeddings equal to max_position_embeddings in its config.json.")


def _build(run: RunFolder, base: Path, options: ExportOptions, out: Path, scratch: Path) -> None:
    """Run the model builder into ``out``; its chatter goes to ``build.log`` there."""
    builder = _import_builder()
    # quiet_loading as well: in a notebook the first frame of transformers' save and load bars escaped the log.
    with (out / BUILD_LOG).open("w", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log), models.quiet_loading():
        # Logits for the last prompt token only: computing them for every prompt token made the stand-in's
        # first token take 0.5 s (1 prompt) to 9 s (8 prompts) on 2 cores, its 49k-word output layer dominating.
        extra = ["prune_lm_head=true"]
        if options.layout == "merged":
            from .training.artifacts import merge_and_save

            source = merge_and_save(run, scratch / "merged")
        else:
            source = base
            extra += [f"adapter_path={run.adapter_dir}", "nodes_to_exclude=" + ",".join(_lora_node_names(base))]
        arguments = (None, str(source), str(out), options.precision, options.device, str(scratch / "cache"))
        builder.create_model(*arguments, **builder.parse_extra_options(*arguments, extra))


def _import_builder():
    """The builder module, without the logging set-up its quantizer does on import (the root logger at INFO, to
    stderr: every later INFO line of the process would print). Imported before stdout/stderr are redirected."""
    import logging

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    from onnxruntime_genai.models import builder

    root.setLevel(level)
    root.handlers[:] = handlers
    return builder


def _lora_node_names(base: Path) -> list[str]:
    """The builder's names for every LoRA MatMul, kept out of int4 quantization so the adapter stays exact
    (and can become a separate file: a quantized weight cannot be swapped at run time)."""
    layers = json.loads((base / "config.json").read_text(encoding="utf-8"))["num_hidden_layers"]
    return [f"/model/layers.{i}/{block}/{projection}/lora_{part}/MatMul" for i in range(layers)
            for block, projections in _LORA_PROJECTIONS.items() for projection in projections for part in "AB"]


def _finish_folder(run: RunFolder, base: Path, out: Path) -> list[int]:
    """The run's tokenizer and chat template in the folder, and every stop id of the run in ``genai_config``."""
    from transformers import AutoTokenizer, GenerationConfig

    from .generation import stop_token_ids

    genai_file = out / "genai_config.json"
    genai = json.loads(genai_file.read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(str(run.adapter_dir))
    tokenizer.model_max_length = genai["model"]["context_length"]
    tokenizer.save_pretrained(str(out))  # the template the run was trained with, not the base model's
    try:
        generation = GenerationConfig.from_pretrained(str(base))
    except OSError:
        generation = None
    stops = stop_token_ids(SimpleNamespace(generation_config=generation), tokenizer)
    configured = genai["model"]["eos_token_id"]
    configured = configured if isinstance(configured, list) else [configured]
    genai["model"]["eos_token_id"] = sorted(set(configured) | set(stops))
    genai["model"]["pad_token_id"] = tokenizer.pad_token_id
    atomic_write_json(genai_file, genai)
    return genai["model"]["eos_token_id"]


def _move_lora_to_adapter_file(folder: Path) -> None:
    """LoRA weights out of the model into ``adapter.onnx_adapter``; the model keeps zero defaults in their place,
    so it answers as the base model until the adapter is activated."""
    import numpy as np
    import onnx_ir as ir
    import onnxruntime as ort

    built = folder / "built"
    built.mkdir()
    for name in ("model.onnx", "model.onnx.data"):
        (folder / name).rename(built / name)
    model = ir.load(str(built / "model.onnx"))
    weights = {}
    for name, value in model.graph.initializers.items():
        if ".lora_A." not in name and ".lora_B." not in name:
            continue
        array = value.const_value.numpy().copy()
        if array.dtype not in (np.float32, np.float16):
            raise ExportError(f"the builder quantized the LoRA weight {name}, so it cannot become an adapter file. "
                              "Fix: export with --layout merged.")
        weights[name] = ort.OrtValue.ortvalue_from_numpy(array)
        value.const_value = ir.tensor(np.zeros_like(array), name=name)
        model.graph.inputs.append(value)  # an input with an initializer: ONNX Runtime uses it unless it is fed
    adapter = ort.AdapterFormat()
    adapter.set_adapter_version(1)
    adapter.set_model_version(1)
    adapter.set_parameters(weights)
    adapter.export_adapter(str(folder / ADAPTER_FILE))
    ir.save(model, str(folder / "model.onnx"), external_data="model.onnx.data", size_threshold_bytes=0)
    del model  # its tensors map files in built/
    for path in built.iterdir():
        path.unlink()
    built.rmdir()


def _write_manifest(folder: Path, run: RunFolder, options: ExportOptions, fingerprint: str,
                    stops: list[int]) -> dict:
    import onnxruntime_genai as og

    manifest = {"version": EXPORT_VERSION, "fingerprint": fingerprint, "run": run.name,
                "base_model": run.config().model, "precision": options.precision, "device": options.device,
                "layout": options.layout, "adapter_file": ADAPTER_FILE if options.layout == "adapter" else None,
                "stop_token_ids": stops, "onnxruntime_genai": og.__version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}}
    atomic_write_json(folder / MANIFEST, manifest)  # last: a folder without it is never trusted
    return manifest


# ----- building only what changed --------------------------------------------------------------------
def _fingerprint(run: RunFolder, base: Path, options: ExportOptions) -> str:
    import onnxruntime_genai as og

    digest = hashlib.sha256(json.dumps([EXPORT_VERSION, og.__version__, options.precision, options.device,
                                        options.layout]).encode())
    for folder in (run.adapter_dir, base):
        _hash_folder(digest, folder)
    return digest.hexdigest()


def _hash_folder(digest, folder: Path) -> None:
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}".encode())
        if stat.st_size > HASH_BYTES_LIMIT:
            digest.update(str(stat.st_mtime_ns).encode())
            continue
        with path.open("rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)


def _reusable_manifest(folder: Path, fingerprint: str) -> dict | None:
    """The manifest of a complete export built from the same inputs, else None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("fingerprint") != fingerprint or manifest.get("version") != EXPORT_VERSION:
        return None
    complete = all((folder / name).is_file() and (folder / name).stat().st_size == size
                   for name, size in manifest.get("files", {}).items())
    return manifest if complete else None


# ----- generating with an export -------------------------------------------------------------------
def load_export(source: str | os.PathLike | RunFolder | None = None, precision: str = "int4",
                use_adapter: bool = True, threads: int | None = None) -> OnnxChatModel:
    """An export loaded for generating: an export folder, or a run (by default the latest) whose ``precision``
    CPU export is used, built first when missing (``load_export(precision="fp32")``)."""
    if not _is_export_folder(source):
        source = export_onnx(source, precision=precision).folder
    return OnnxChatModel(Path(source), use_adapter=use_adapter, threads=threads)


def _is_export_folder(source) -> bool:
    return isinstance(source, (str, os.PathLike)) and (Path(source) / "genai_config.json").is_file()


# Generators kept for their cached prompt tokens: at most one per request of a full batch of the local endpoint,
# and at most this many bytes of keys and values together (ONNX Runtime GenAI allocates a generator's cache for
# its whole max_length up front). A generator is made for its prompt, its reply and this many tokens more, so a
# later prompt of about the same length fits. Fewer shared tokens than MIN_SHARED_TOKENS are read afresh.
KEPT_GENERATORS = 8
KEPT_CACHE_BYTES = 1 << 30
REUSE_HEADROOM_TOKENS = 256
MIN_SHARED_TOKENS = 8


@dataclass
class _CachedGenerator:
    generator: object  # an onnxruntime_genai.Generator
    sampling: tuple
    max_length: int  # prompt and reply together, at most
    tokens: list[int]  # the tokens whose keys and values it holds


class OnnxChatModel:
    """An export folder in ONNX Runtime GenAI, with the run's transformers tokenizer.

    The transformers tokenizer renders the chat template exactly as training and PyTorch generation do,
    so both backends see the same prompt tokens. ``config.max_position_embeddings`` and
    ``generation_config.eos_token_id`` mirror a transformers model's, for code that reads those.
    """

    def __init__(self, folder: Path, use_adapter: bool = True, threads: int | None = None):
        import onnxruntime_genai as og
        from transformers import AutoTokenizer

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ExportError(f"there is no export at {self.folder}. Fix: export a run first "
                              "(phi3lab export --format onnx) and pass the folder it prints.")
        missing = [name for name in ("genai_config.json", *TOKENIZER_FILES) if not (self.folder / name).is_file()]
        if missing:
            raise ExportError(f"{self.folder} is not a complete ONNX export: {', '.join(missing)} missing (the "
                              "tokenizer and chat template travel with the model). Fix: export the run again "
                              "(phi3lab export --format onnx --force).")
        config = og.Config(str(self.folder))
        if threads:
            config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
        self.model = og.Model(config)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
        genai = json.loads((self.folder / "genai_config.json").read_text(encoding="utf-8"))["model"]
        eos = genai["eos_token_id"]
        self.stop_ids = sorted(eos if isinstance(eos, list) else [eos])
        self.pad_id = genai.get("pad_token_id", self.tokenizer.pad_token_id)
        self.context_length = genai["context_length"]
        self.config = SimpleNamespace(max_position_embeddings=self.context_length)
        self.generation_config = SimpleNamespace(eos_token_id=self.stop_ids)
        self.manifest = _read_manifest(self.folder)
        decoder = genai["decoder"]
        value_bytes = 2 if self.manifest.get("device") == "cuda" else 4  # fp16 on CUDA, fp32 on a CPU
        self.cache_bytes_per_token = (2 * decoder["num_hidden_layers"] * decoder["num_key_value_heads"]
                                      * decoder["head_size"] * value_bytes)
        self.adapters = None
        self._kept: list[_CachedGenerator] = []
        self.prompt_tokens_read = self.prompt_tokens_reused = 0
        if use_adapter and self.manifest.get("adapter_file"):
            self.adapters = og.Adapters(self.model)
            self.adapters.load(str(self.folder / self.manifest["adapter_file"]), ADAPTER_NAME_IN_RUNTIME)

    @property
    def name(self) -> str:
        return f"{self.manifest.get('run', self.folder.parent.parent.name)}-{self.folder.name}"

    @property
    def backend(self) -> str:
        """What generates, as evaluation reports it: ``ONNX Runtime GenAI int4 (cpu)``."""
        return f"ONNX Runtime GenAI {self.manifest.get('precision', '?')} ({self.manifest.get('device', 'cpu')})"

    def _generator(self, **search):
        import onnxruntime_genai as og

        params = og.GeneratorParams(self.model)
        params.set_search_options(**search)
        generator = og.Generator(self.model, params)
        if self.adapters is not None:
            generator.set_active_adapter(self.adapters, ADAPTER_NAME_IN_RUNTIME)
        return generator

    def encode(self, messages: list[dict]) -> list[int]:
        from .generation import prompt_messages

        ids = self.tokenizer.apply_chat_template(prompt_messages(messages), add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def generate_ids(self, prompts: list[list[int]], max_new_tokens: int | list[int], temperature: float = 0.0,
                     top_p: float = 1.0, on_token: Callable[[int, int], None] | None = None) -> list[list[int]]:
        """The new token ids for each prompt; each ends at its first stop id (kept) or its own limit.
        ``on_token(row, token)`` is called for each kept token as it is generated.

        Each prompt gets its own generator, stepped in turn, rather than one padded batch: the export computes
        logits for the last prompt token only (``prune_lm_head``), which ONNX Runtime GenAI cannot combine
        with padding, and without it a batch's prompt pass dominated (9 s for 8 prompts on 2 cores).
        Generators are kept for later prompts (``_read_prompt``): call from one thread, as the endpoint does.
        """
        limits = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(prompts)
        # The full vocabulary for top_k: OpenAI's API has no top-k, and the builder's default is 50.
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": len(self.tokenizer)} \
            if temperature > 0 else {"do_sample": False}
        generators, replies = [], [[] for _ in prompts]

        def step(row: int) -> bool:
            """One more token for ``row``; False once its reply has ended."""
            generators[row].generator.generate_next_token()
            token = int(generators[row].generator.get_next_tokens()[0])
            replies[row].append(token)
            if on_token is not None:
                on_token(row, token)
            return not (token in self.stop_ids or len(replies[row]) >= limits[row]
                        or len(prompts[row]) + len(replies[row]) >= self.context_length)

        open_rows = []
        for row, prompt in enumerate(prompts):
            generators.append(self._read_prompt(prompt, limits[row], sampling))
            if step(row):  # its first token at once, before the next prompt is read: streams start sooner
                open_rows.append(row)
        while open_rows:
            open_rows = [row for row in open_rows if step(row)]
        for cached, prompt, reply in zip(generators, prompts, replies, strict=True):
            cached.tokens = prompt + reply[:-1]  # the last token was generated but not yet read
            self._keep(cached)
        return replies

    def _read_prompt(self, prompt: list[int], limit: int, sampling: dict) -> _CachedGenerator:
        """A generator that has read ``prompt``. A kept generator whose tokens start the same way (the same
        system prompt, or the earlier turns of the same chat) is rewound to the shared start and reads only the
        rest: its keys and values for the shared tokens are still valid, and reading the prompt was most of a
        short reply's time (0.41 of 0.60 s for the int4 stand-in). ONNX Runtime GenAI has ``rewind_to`` but
        no prefix cache of its own, so this is the cache."""
        import numpy as np

        key, needed = tuple(sorted(sampling.items())), min(len(prompt) + limit, self.context_length)
        best, shared = None, 0
        for kept in self._kept:
            fits = kept.sampling == key and kept.max_length >= needed
            common = len(os.path.commonprefix([kept.tokens, prompt])) if fits else 0
            if common > shared:
                best, shared = kept, common
        # At least one prompt token is read, so there are logits for the first new token.
        shared = min(shared, len(prompt) - 1)
        if best is not None and shared >= MIN_SHARED_TOKENS:
            self._kept.remove(best)
            cached = best
            cached.generator.rewind_to(shared)
        else:
            max_length = min(needed + REUSE_HEADROOM_TOKENS, self.context_length)
            cached = _CachedGenerator(self._generator(max_length=max_length, **sampling), key, max_length, [])
            shared = 0
        cached.generator.append_tokens(np.array(prompt[shared:], dtype=np.int32))
        self.prompt_tokens_read += len(prompt) - shared
        self.prompt_tokens_reused += shared
        return cached

    def _keep(self, cached: _CachedGenerator) -> None:
        """Keep a generator for a later prompt; the newest are kept, within ``KEPT_GENERATORS`` and
        ``KEPT_CACHE_BYTES``."""
        self._kept.append(cached)
        while len(self._kept) > KEPT_GENERATORS or (
                sum(kept.max_length for kept in self._kept) * self.cache_bytes_per_token > KEPT_CACHE_BYTES):
            del self._kept[0]

    def next_token_logits(self, ids: list[int], positions: list[int]):
        """Teacher forcing: for each position ``t`` (ascending, from 1), the logits predicting ``ids[t]`` from
        ``ids[:t]``, in one pass over ``ids`` (for perplexity on reference replies)."""
        import numpy as np

        generator, fed = self._generator(max_length=len(ids)), 0
        for position in positions:
            generator.append_tokens(np.array(ids[fed:position], dtype=np.int32))
            fed = position
            yield generator.get_logits()[0, -1]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([t for t in ids if t not in self.stop_ids], skip_special_tokens=True).strip()

    def generate(self, conversations: list[list[dict]], max_new_tokens: int = 128, batch_size: int = 8) -> list[str]:
        """Greedy replies to each conversation (new text only), like ``phi3lab.generation.generate``."""
        replies = []
        prompts = [self.encode(c) for c in conversations]
        for start in range(0, len(prompts), batch_size):
            replies += [self.decode(ids) for ids in self.generate_ids(prompts[start:start + batch_size], max_new_tokens)]
        return replies

    def __repr__(self) -> str:
        adapter = ", adapter active" if self.adapters is not None else ""
        return f"OnnxChatModel({self.folder}{adapter})"


def _read_manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # a folder built by hand with the builder: no adapter file, no run name


__all__ = ["Export", "ExportError", "ExportOptions", "OnnxChatModel", "export_onnx", "load_export"]
