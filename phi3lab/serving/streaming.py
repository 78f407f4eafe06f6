"""Streaming replies: server-sent events in OpenAI's ``chat.completion.chunk`` format, for both backends.

A streaming request is an ordinary job in the batching generator with an ``on_token`` callback. Each
backend hands every new token of a batch to a ``TokenDispatcher`` (PyTorch through ``model.generate``'s
``streamer``, ONNX Runtime GenAI through ``OnnxChatModel.generate_ids``'s callback), which passes each
request its own tokens until its stop token or its ``max_tokens``, exactly where its non-streamed answer
ends. The callback runs on the generator thread and only moves the token onto the event loop; the text is
decoded there, so the concatenated deltas equal the non-streamed ``content``.

The stream is: a first chunk with the role, one chunk per piece of new text, a last chunk with the
``finish_reason``, a usage chunk when ``stream_options.include_usage`` asks for it, then ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from ..secrets import mask_secrets

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # proxies must not hold chunks back


class TokenDispatcher:
    """Gives each job of a batch its own new tokens, one at a time, until its stop token or its limit.

    Usable as a transformers streamer (``put``/``end``): ``generate`` first puts the prompt (2-D), then one
    token per row at every step.
    """

    def __init__(self, jobs, stop_ids):
        self.jobs, self.stop_ids = jobs, set(stop_ids)
        self.counts = [0] * len(jobs)
        self.open = [job.on_token is not None for job in jobs]
        self._prompt_seen = False

    def __call__(self, row: int, token: int) -> None:
        if not self.open[row]:
            return
        self.counts[row] += 1
        self.jobs[row].on_token(token)
        if token in self.stop_ids or self.counts[row] >= self.jobs[row].request.max_tokens:
            self.open[row] = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # the prompt ids come first; they are not part of the reply
            self._prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            self(row, token)

    def end(self) -> None:
        pass


class TextDeltas:
    """New text as tokens arrive, never more than the final answer will hold.

    The whole reply is decoded each time (a token alone may be half a character or a word piece), and
    text is held back while it ends in whitespace or in an incomplete character, since the final
    answer is stripped.
    """

    def __init__(self, tokenizer, skip_ids):
        self.tokenizer, self.skip_ids = tokenizer, set(skip_ids) | {tokenizer.pad_token_id}
        self.ids: list[int] = []
        self.sent = ""

    def add(self, token: int) -> str:
        if token in self.skip_ids:
            return ""
        self.ids.append(token)
        ready = self.tokenizer.decode(self.ids, skip_special_tokens=True).strip()
        if ready.endswith("\ufffd") or not ready.startswith(self.sent):
            return ""
        delta, self.sent = ready[len(self.sent):], ready
        return delta

    def rest(self, final_text: str) -> str:
        """What the final answer holds beyond the text already sent."""
        return final_text[len(self.sent):] if final_text.startswith(self.sent) else ""


def _event(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


def stream_response(generator, request, prompt_ids: list[int], served_name: str):
    """A ``StreamingResponse`` of the reply to ``request`` as server-sent events (see the module docstring)."""
    from starlette.responses import StreamingResponse

    loop = asyncio.get_running_loop()
    tokens: asyncio.Queue[int | None] = asyncio.Queue()
    future = generator.submit(request, prompt_ids, on_token=lambda t: loop.call_soon_threadsafe(tokens.put_nowait, t))
    # Called on the generator thread after its last on_token, so the end marker queues after every token.
    future.add_done_callback(lambda _: loop.call_soon_threadsafe(tokens.put_nowait, None))
    return StreamingResponse(_events(generator, request, future, tokens, served_name, len(prompt_ids)),
                             media_type="text/event-stream", headers=SSE_HEADERS)


async def _events(generator, request, future, tokens: asyncio.Queue, served_name: str, prompt_tokens: int):
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": served_name}

    def chunk(delta: dict, finish_reason: str | None = None) -> str:
        return _event({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})

    yield chunk({"role": "assistant", "content": ""})
    text = TextDeltas(generator.tokenizer, generator.stop_ids)
    while (token := await tokens.get()) is not None:
        if delta := text.add(token):
            yield chunk({"content": delta})
    try:
        result = future.result()
    except Exception as exc:  # the status (200) is already sent: the error travels as an event
        yield _event({"error": {"message": mask_secrets(f"generation failed: {type(exc).__name__}: {exc}"),
                                "type": "server_error", "param": None, "code": None}})
        yield _event("[DONE]")
        return
    if rest := text.rest(result["text"]):
        yield chunk({"content": rest})
    yield chunk({}, result["finish_reason"])
    if request.stream_options is not None and request.stream_options.include_usage:
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": result["completion_tokens"],
                 "total_tokens": prompt_tokens + result["completion_tokens"]}
        yield _event({**base, "choices": [], "usage": usage})
    yield _event("[DONE]")
