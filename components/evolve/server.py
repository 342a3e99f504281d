"""A small OpenAI-compatible HTTP endpoint over our own policy.

OpenEvolve (and any OpenAI client) talks to ``http://127.0.0.1:PORT/v1``:

* ``POST /v1/chat/completions``  ``{"model", "messages", "n", "temperature", "top_p",
  "max_tokens", "stop", "seed"}`` -> ``{"choices": [{"message": {...}}], "usage": {...}}``
* ``POST /v1/completions``       same, with ``"prompt"`` instead of ``"messages"``
* ``GET  /v1/models``            the served model names

Text generation is whatever :class:`Sampler` the server is given (in practice
:func:`engine_sampler` over our hf :class:`RolloutEngine`); how chat messages
become a prompt is a :class:`PromptAdapter` (the tokenizer's chat template for
real models, or the task's own prompt for the tiny model, see ``components.evolve``).
Requests are served one at a time (the engine is not re-entrant); the server
binds to loopback only. Where vLLM is installed, ``vllm serve MODEL_DIR`` offers
the same two routes and OpenEvolve can point at it instead.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class CompletionParams:
    """Sampling parameters of one request (OpenAI names, our units: tokens)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Completion:
    """One sampled continuation."""

    text: str
    finish_reason: str = "stop"
    completion_tokens: int = 0


Sampler = Callable[[str, CompletionParams], list[Completion]]
"""(prompt text, params) -> params.n completions."""

PromptAdapter = Callable[[str, Messages], str]
"""(model name, chat messages) -> prompt text fed to the sampler."""

ResponseAdapter = Callable[[str, str], str]
"""(model name, generated text) -> the assistant message returned to the client."""


class RequestError(ValueError):
    """A malformed request; answered with HTTP 400 and the message."""


def plain_chat_prompt(model: str, messages: Messages) -> str:
    """Render messages as ``role: content`` lines ending with ``assistant:`` (no chat template)."""
    lines = [f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages]
    return "\n".join(lines) + "\nassistant:"


def chat_template_prompt(tokenizer: Any) -> PromptAdapter:
    """Prompt adapter using the tokenizer's chat template (falls back to plain rendering)."""

    def adapt(model: str, messages: Messages) -> str:
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return plain_chat_prompt(model, messages)

    return adapt


def engine_sampler(engine: Any, base_seed: int = 0) -> Sampler:
    """A :data:`Sampler` over ``components.policy.rollout.RolloutEngine`` (one prompt, n samples).

    Requests without a ``seed`` get ``base_seed``, ``base_seed + 1``, ... so repeated
    requests sample differently yet a whole session is reproducible.
    """
    from components.policy.rollout import SamplingParams

    next_seed = itertools.count(base_seed)

    def sample(prompt: str, params: CompletionParams) -> list[Completion]:
        rollouts = engine.generate(
            [prompt],
            SamplingParams(
                n=params.n,
                temperature=max(params.temperature, 1e-4),  # OpenAI 0 = greedy
                top_p=params.top_p,
                max_new_tokens=params.max_tokens,
                stop=params.stop,
                seed=params.seed if params.seed is not None else next(next_seed),
            ),
        )
        return [
            Completion(text=text, finish_reason=reason, completion_tokens=len(ids))
            for text, reason, ids in zip(
                rollouts.texts, rollouts.finish_reasons, rollouts.completion_ids, strict=True
            )
        ]

    return sample


def _params_from_body(body: dict[str, Any], default_max_tokens: int) -> CompletionParams:
    stop = body.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    try:
        params = CompletionParams(
            n=int(body.get("n") or 1),
            temperature=float(body["temperature"]) if body.get("temperature") is not None else 1.0,
            top_p=float(body["top_p"]) if body.get("top_p") is not None else 1.0,
            max_tokens=int(body.get("max_tokens") or body.get("max_completion_tokens") or default_max_tokens),
            stop=tuple(str(s) for s in stop),
            seed=int(body["seed"]) if body.get("seed") is not None else None,
        )
    except (TypeError, ValueError) as exc:
        raise RequestError(f"bad sampling parameter: {exc}") from None
    if params.n < 1 or params.max_tokens < 1 or params.temperature < 0 or not 0 < params.top_p <= 1:
        raise RequestError("need n >= 1, max_tokens >= 1, temperature >= 0, 0 < top_p <= 1")
    return params


@dataclass
class PolicyServer:
    """Serve a :data:`Sampler` as an OpenAI-compatible API on 127.0.0.1.

    Use as a context manager; ``base_url`` is what an OpenAI client takes::

        with PolicyServer(sampler, model_names=("policy",)) as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="none")
    """

    sampler: Sampler
    model_names: Sequence[str] = ("policy",)
    prompt_adapter: PromptAdapter = plain_chat_prompt
    response_adapter: ResponseAdapter | None = None
    max_tokens: int = 256
    """Default ``max_tokens`` when a request gives none."""
    max_tokens_cap: int | None = None
    """Upper bound applied to every request's ``max_tokens`` (None = no cap)."""
    port: int = 0
    """0 = any free port."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.requests_served = 0

    # ---- lifecycle -------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server is not running")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> PolicyServer:
        handler = _make_handler(self)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="policy-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> PolicyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- request handling (pure apart from the sampler) -------------------------------
    def handle(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        """Answer one request body for ``route`` ("chat" or "completion")."""
        model = str(body.get("model") or self.model_names[0])
        params = _params_from_body(body, self.max_tokens)
        if self.max_tokens_cap is not None and params.max_tokens > self.max_tokens_cap:
            params = CompletionParams(**{**params.__dict__, "max_tokens": self.max_tokens_cap})
        if route == "chat":
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise RequestError("'messages' must be a non-empty list")
            prompt = self.prompt_adapter(model, messages)
        else:
            prompt = body.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1:
                prompt = prompt[0]
            if not isinstance(prompt, str):
                raise RequestError("'prompt' must be a string")
        with self._lock:
            completions = self.sampler(prompt, params)
            self.requests_served += 1
        completion_tokens = sum(c.completion_tokens for c in completions)
        reply: dict[str, Any] = {
            "id": f"{'chatcmpl' if route == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion" if route == "chat" else "text_completion",
            "created": int(time.time()),
            "model": model,
            "usage": {
                "prompt_tokens": 0,
                "completion_tokens": completion_tokens,
                "total_tokens": completion_tokens,
            },
        }
        if route == "chat":
            adapt = self.response_adapter or (lambda _model, text: text)
            reply["choices"] = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": adapt(model, c.text)},
                    "finish_reason": c.finish_reason,
                }
                for i, c in enumerate(completions)
            ]
        else:
            reply["choices"] = [
                {"index": i, "text": c.text, "finish_reason": c.finish_reason, "logprobs": None}
                for i, c in enumerate(completions)
            ]
        return reply


def _make_handler(server: PolicyServer) -> type[BaseHTTPRequestHandler]:
    routes = {"/v1/chat/completions": "chat", "/v1/completions": "completion"}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                data = [{"id": name, "object": "model", "owned_by": "vpo"} for name in server.model_names]
                self._send(200, {"object": "list", "data": data})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            route = routes.get(self.path.rstrip("/"))
            if route is None:
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise RequestError("body must be a JSON object")
                self._send(200, server.handle(route, body))
            except (RequestError, json.JSONDecodeError) as exc:
                self._send(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})
            except Exception as exc:  # the sampler failed: report, keep serving
                self._send(500, {"error": {"message": f"{type(exc).__name__}: {exc}", "type": "server_error"}})

    return Handler
