"""The OpenAI wire format (OpenAI, Azure, Ollama, vLLM, llama.cpp server): ``OpenAIChatModel``, ``OpenAIEmbeddings``
and the retry policy they share (tenacity: backoff on 429, 5xx, time-outs and dropped connections)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from askflow.domain.errors import ModelUnavailable
from askflow.domain.model import Usage
from askflow.ports import ChatModel, Completion, Embeddings

log = logging.getLogger(__name__)
T = TypeVar("T")

# The endpoints are called through the client's ``post`` (its documented way to call any endpoint, with the same
# auth, Azure deployment routing, timeouts, errors and typed responses) rather than ``client.chat.completions``:
# the first use of those typed resources imports every OpenAI API module, about 0.3 s of each worker's cold start
# (bench/cold_start.py).
CHAT_PATH = "/chat/completions"
EMBEDDINGS_PATH = "/embeddings"


def retrying_call(*, attempts: int, backoff_max_s: float) -> Callable[..., Any]:
    """``call(fn, *args, **kwargs)`` retried by tenacity on transient OpenAI errors; ``ModelUnavailable`` after."""
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
        return isinstance(error, openai.APIStatusError) and error.status_code >= 500

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
        except openai.OpenAIError as error:
            raise ModelUnavailable(f"model endpoint refused the call: {type(error).__name__}") from error

    return call


class OpenAIChatModel(ChatModel):
    def __init__(self, *, client: Any, model: str, retrying: Callable[..., Any], temperature: float = 0.0) -> None:
        self._client = client
        self.name = model
        self._retrying = retrying
        self._temperature = temperature

    def complete(self, system: str, user: str, *, json_output: bool = False) -> Completion:
        from openai.types.chat import ChatCompletion

        body: dict[str, Any] = {
            "model": self.name,
            "temperature": self._temperature,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        }
        if json_output:
            body["response_format"] = {"type": "json_object"}
        response = self._retrying(self._client.post, CHAT_PATH, body=body, cast_to=ChatCompletion)
        usage = response.usage
        return Completion(
            text=response.choices[0].message.content or "",
            usage=Usage(
                model=self.name,
                prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            ),
        )


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
            response = self._retrying(
                self._client.post, EMBEDDINGS_PATH, body={"model": self.name, "input": batch},
                cast_to=CreateEmbeddingResponse,
            )
            vectors.extend(item.embedding for item in sorted(response.data, key=lambda d: d.index))
        return vectors
