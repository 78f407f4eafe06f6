"""The local endpoint's second backend: an exported folder (``phi3lab export --format onnx``) generating with
ONNX Runtime GenAI, behind the same OpenAI routes as the PyTorch backend.

``OnnxBatchingGenerator`` is the app's ``BatchingGenerator`` (one worker thread, queued requests with the same
sampling settings taken together, streaming through ``on_token``) with ONNX Runtime GenAI doing the
generating: ``OnnxChatModel.generate_ids`` steps one generator per request in turn (the export computes
logits for a prompt's last token only, which cannot be combined with a padded batch), gives each its own
limit, and reports each token as it is made. Generators are kept between requests, so a prompt that starts
like an earlier one (the same system prompt, or the same chat one turn later) reads only its new tokens.
``benchmarks/backend_load.py`` compares the backends: on 2 CPU cores at 8 clients the int4 export made 3.3x
PyTorch's tokens/s, the fp32 export about the same as PyTorch.
"""

from __future__ import annotations

import os
from pathlib import Path

from .app import BatchingGenerator
from .streaming import TokenDispatcher


class OnnxBatchingGenerator(BatchingGenerator):
    """Batches requests as the PyTorch generator does; ``model`` is an ``phi3lab.export.OnnxChatModel``
    (which offers the ``config.max_position_embeddings`` and ``generation_config`` the base class reads)."""

    def __init__(self, model, max_batch: int = 8, batch_window_s: float = 0.02):
        super().__init__(model, model.tokenizer, max_batch=max_batch, batch_window_s=batch_window_s)

    def _generate(self, batch) -> list[dict]:
        temperature, top_p = batch[0].sampling
        dispatch = TokenDispatcher(batch, self.stop_ids)
        replies = self.model.generate_ids([job.prompt_ids for job in batch],
                                          [job.request.max_tokens for job in batch], temperature=temperature,
                                          top_p=top_p, on_token=dispatch if any(j.on_token for j in batch) else None)
        return [self._answer(job, reply) for job, reply in zip(batch, replies, strict=True)]


def load_onnx_for_serving(folder: str | os.PathLike, threads: int | None = None):
    """(model, name, info) for ``serve_forever``: the export in ``folder``, its adapter file active if it has one."""
    from ..export import OnnxChatModel

    model = OnnxChatModel(Path(folder), threads=threads)
    manifest = model.manifest
    info = {"backend": "onnxruntime-genai", "export": str(model.folder), "precision": manifest.get("precision"),
            "adapter": manifest.get("adapter_file"), "merged": manifest.get("layout") == "merged",
            "device": manifest.get("device", "cpu")}
    return model, model.name, info
