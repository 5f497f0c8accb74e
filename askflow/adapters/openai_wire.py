"""The OpenAI wire format (OpenAI, Azure, Ollama, vLLM, llama.cpp server): ``OpenAIChatModel``, ``OpenAIEmbeddings``
and the retry policy they share (tenacity: backoff on 429, 5xx, time-outs and dropped connections)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from askflow import tracing
from askflow.domain.errors import ModelUnavailable
from askflow.domain.model import Usage
from askflow.ports import ChatModel, Completion, Embeddings

log = logging.getLogger(__name__)
T = TypeVar("T")


class IncompleteStream(Exception):
    """A streamed reply ended before the model said it had finished (no ``finish_reason``): the connection dropped."""

# The endpoints are called through the client's ``post`` (its documented way to call any endpoint, with the same
# auth, Azure deployment routing, timeouts, errors and typed responses) rather than ``client.chat.completions``:
# the first use of those typed resources imports every OpenAI API module, about 0.3 s of each worker's cold start
# (bench/cold_start.py).
CHAT_PATH = "/chat/completions"
EMBEDDINGS_PATH = "/embeddings"


def retrying_call(*, attempts: int, backoff_max_s: float) -> Callable[..., Any]:
    """``call(fn, *args, **kwargs)`` retried by tenacity on transient OpenAI errors; ``ModelUnavailable`` after."""
    import httpx
    import openai
    from tenacity import (
        RetryError,
        Retrying,
        retry_if_exception,
        stop_after_attempt,
        wait_random_exponential,
    )

    def transient(error: BaseException) -> bool:
        if isinstance(error, (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError)):
            return True
        if isinstance(error, (httpx.TransportError, IncompleteStream)):  # a stream cut off after it began
            return True
        if isinstance(error, openai.APIStatusError):
            return error.status_code >= 500
        return isinstance(error, openai.APIError)  # an error event in the middle of a stream

    def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_random_exponential(multiplier=0.2, max=backoff_max_s),
            retry=retry_if_exception(transient),
            before_sleep=lambda state: log.warning(
                "model call failed (%s), attempt %d of %d",
                type(state.outcome.exception()).__name__, state.attempt_number, attempts,
            ),
            reraise=False,
        )
        try:
            return retrying(fn, *args, **kwargs)
        except RetryError as error:
            last = error.last_attempt.exception()
            raise ModelUnavailable(f"model endpoint failed {attempts} times: {type(last).__name__}") from last
        except (openai.OpenAIError, httpx.TransportError, IncompleteStream) as error:
            raise ModelUnavailable(f"model endpoint refused the call: {type(error).__name__}") from error

    return call


class OpenAIChatModel(ChatModel):
    def __init__(self, *, client: Any, model: str, retrying: Callable[..., Any], temperature: float = 0.0) -> None:
        self._client = client
        self.name = model
        self._retrying = retrying
        self._temperature = temperature

    def _body(self, system: str, user: str) -> dict[str, Any]:
        return {
            "model": self.name,
            "temperature": self._temperature,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        }

    def complete(self, system: str, user: str, *, json_output: bool = False) -> Completion:
        from openai.types.chat import ChatCompletion

        body = self._body(system, user)
        if json_output:
            body["response_format"] = {"type": "json_object"}
        with self._span() as current:
            response = self._retrying(self._client.post, CHAT_PATH, body=body, cast_to=ChatCompletion)
            completion = Completion(text=response.choices[0].message.content or "", usage=self._usage(response.usage))
            _annotate_usage(current, completion.usage)
            return completion

    def stream(self, system: str, user: str, *, on_text: Callable[[str], None]) -> Completion:
        """The reply as server-sent chunks (``stream: true``, with the usage in the last chunk); an attempt that fails
        mid-stream is retried whole, its text started again."""
        from openai import Stream
        from openai.types.chat import ChatCompletionChunk

        body = self._body(system, user) | {"stream": True, "stream_options": {"include_usage": True}}

        def attempt() -> Completion:
            parts: list[str] = []
            usage = finished = None
            chunks = self._client.post(CHAT_PATH, body=body, cast_to=ChatCompletionChunk, stream=True,
                                       stream_cls=Stream[ChatCompletionChunk])
            with chunks:
                for chunk in chunks:
                    usage = chunk.usage or usage
                    if not chunk.choices:
                        continue
                    finished = chunk.choices[0].finish_reason or finished
                    if delta := chunk.choices[0].delta.content:
                        parts.append(delta)
                        on_text("".join(parts))
            if finished is None:
                raise IncompleteStream(f"the stream ended after {len(parts)} chunks, unfinished")
            return Completion(text="".join(parts), usage=self._usage(usage))

        with self._span() as current:
            completion = self._retrying(attempt)
            _annotate_usage(current, completion.usage)
            return completion

    def _span(self):
        """A span per model call (OpenTelemetry's GenAI conventions), retries included."""
        return tracing.span(f"chat {self.name}", kind="client", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": self.name})

    def _usage(self, usage: Any) -> Usage:
        return Usage(model=self.name, prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                     completion_tokens=getattr(usage, "completion_tokens", 0) or 0)


class OpenAIEmbeddings(Embeddings):
    """Embeddings over the OpenAI wire format (OpenAI, Azure, Ollama, vLLM, llama.cpp server)."""

    def __init__(self, *, client: Any, model: str, dimension: int, batch_size: int = 256, retrying: Any) -> None:
        self._client = client
        self.name = model
        self.dimension = dimension
        self._batch_size = batch_size
        self._retrying = retrying

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        from openai.types import CreateEmbeddingResponse

        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            batch = list(texts[start : start + self._batch_size])
            with tracing.span(f"embeddings {self.name}", kind="client", attributes={
                    "gen_ai.operation.name": "embeddings", "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": self.name}) as current:
                response = self._retrying(
                    self._client.post, EMBEDDINGS_PATH, body={"model": self.name, "input": batch},
                    cast_to=CreateEmbeddingResponse,
                )
                tracing.annotate(current, {"gen_ai.usage.input_tokens": getattr(response.usage, "prompt_tokens", None)})
            vectors.extend(item.embedding for item in sorted(response.data, key=lambda d: d.index))
        return vectors


def _annotate_usage(current, usage: Usage) -> None:
    tracing.annotate(current, {"gen_ai.usage.input_tokens": usage.prompt_tokens,
                               "gen_ai.usage.output_tokens": usage.completion_tokens})
