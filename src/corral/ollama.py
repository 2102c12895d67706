"""The Ollama API, translated to and from llama-server's OpenAI dialect: pure functions.

Nothing here does I/O: :mod:`corral.api.ollama` reads the request, calls these to turn an
Ollama body into the OpenAI body the router already relays (``/v1/chat/completions``,
``/v1/completions``, ``/v1/embeddings``), and turns the answer back — one JSON object,
or an SSE stream into NDJSON lines as the chunks arrive (:class:`StreamTranslator`).
So on-demand starts, the queue, usage counting, metrics and keys stay the router's.

Where Ollama and OpenAI differ:

- ``options`` are Ollama's sampling knobs (``num_predict`` is ``max_tokens``); the
  load-time ones (``num_ctx``) are read by the caller, the rest llama-server ignores.
- ``format`` is ``"json"`` or a JSON schema; OpenAI says ``response_format``.
- ``images`` are bare base64 strings; OpenAI wants ``image_url`` parts with a data URL.
- a tool call's ``function.arguments`` is an object in Ollama, a JSON string in OpenAI.
- ``think`` is a switch (or a level); llama-server reads ``chat_template_kwargs`` and
  answers the reasoning as ``reasoning_content``, which Ollama calls ``thinking``.
- Ollama reports durations in nanoseconds; llama-server reports ``timings`` in ms.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from datetime import datetime, timezone

from corral.errors import UsageError

#: What ``GET /api/version`` says: a version Ollama clients accept (several refuse
#: servers older than 0.6), with corral named in the PEP 440 / semver local part.
VERSION = "0.12.6+corral"
#: Largest ``num_ctx`` accepted whatever the model says.
MAX_NUM_CTX = 1 << 20
#: Ollama's ``keep_alive`` default when the request gives none (5 minutes).
DEFAULT_KEEP_ALIVE = 300.0
#: A metadata array longer than this is left out of ``/api/show`` (tokenizer tables).
SHOW_ARRAY_MAX = 64

#: Ollama option -> (OpenAI / llama-server field, kind).
OPTIONS = {
    "num_predict": ("max_tokens", int),
    "temperature": ("temperature", float),
    "top_k": ("top_k", int),
    "top_p": ("top_p", float),
    "min_p": ("min_p", float),
    "typical_p": ("typical_p", float),
    "seed": ("seed", int),
    "repeat_penalty": ("repeat_penalty", float),
    "repeat_last_n": ("repeat_last_n", int),
    "presence_penalty": ("presence_penalty", float),
    "frequency_penalty": ("frequency_penalty", float),
    "mirostat": ("mirostat", int),
    "mirostat_tau": ("mirostat_tau", float),
    "mirostat_eta": ("mirostat_eta", float),
    "num_keep": ("n_keep", int),
}
#: Options about loading (read by the caller, or meaningless for llama-server).
LOAD_OPTIONS = {
    "num_ctx": int,
    "num_batch": int,
    "num_gpu": int,
    "main_gpu": int,
    "num_thread": int,
    "use_mmap": bool,
    "use_mlock": bool,
    "numa": bool,
    "low_vram": bool,
    "vocab_only": bool,
    "f16_kv": bool,
    "penalize_newline": bool,
}
#: Options of the running instance's flags, for ``/api/show``'s ``parameters``.
FLAG_PARAMETERS = {
    "--ctx-size": "num_ctx",
    "--temp": "temperature",
    "--top-k": "top_k",
    "--top-p": "top_p",
    "--min-p": "min_p",
    "--repeat-penalty": "repeat_penalty",
    "--seed": "seed",
    "--n-predict": "num_predict",
}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_IMAGE_TYPES = (
    (b"\x89PNG", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"RIFF", "image/webp"),
    (b"BM", "image/bmp"),
)
_DONE_REASONS = {"stop": "stop", "length": "length", "tool_calls": "stop", "eos": "stop"}


# -- small checks ------------------------------------------------------------------------


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_body(raw: bytes) -> dict:
    """The request body as a JSON object, else a UsageError (400) saying what is wrong."""
    if not raw.strip():
        raise UsageError("the request body is empty: a JSON object is expected")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise UsageError("the request body must be a JSON object")
    return body


def model_of(body: dict) -> str:
    """The ``model`` a request names (older clients say ``name``)."""
    name = body.get("model", body.get("name"))
    if not isinstance(name, str) or not name.strip():
        raise UsageError("model is required")
    return name.strip()


def wants_stream(body: dict) -> bool:
    """Ollama streams unless told ``"stream": false``."""
    stream = body.get("stream", True)
    if stream is None:
        return True
    if not isinstance(stream, bool):
        raise UsageError("stream must be true or false")
    return stream


# -- names -------------------------------------------------------------------------------


def name_candidates(text: str) -> list[str]:
    """The names ``text`` may mean in corral, most exact first: as typed, without
    Ollama's ``:latest`` tag, and with the tag joined by ``-`` (``gemma:2b`` -> ``gemma-2b``)."""
    out = [text]
    base, sep, tag = text.rpartition(":")
    if sep and base and "/" not in tag:
        if tag.lower() == "latest":
            out.append(base)
        else:
            out.append(f"{base}-{tag}")
    return out


def hub_name(text: str) -> tuple[str, str | None] | None:
    """(``org/repo``, quant or None) for an Ollama name of a Hugging Face model
    (``hf.co/org/repo:Q4_K_M``, ``huggingface.co/org/repo``, ``org/repo:latest``), else None."""
    raw = text.strip()
    for host in ("hf.co/", "huggingface.co/", "www.huggingface.co/"):
        if raw.lower().startswith(host):
            raw = raw[len(host) :]
            break
    head, sep, quant = raw.rpartition(":")
    if not sep:
        head, quant = raw, ""
    if head.count("/") != 1 or not all(head.split("/")):
        return None
    quant = quant.strip()
    return head, (None if not quant or quant.lower() == "latest" else quant.upper())


def pull_ref(text: str) -> str:
    """The corral pull reference for an Ollama pull name; UsageError for a name of
    Ollama's own registry, which corral cannot pull from."""
    found = hub_name(text)
    if found is None:
        raise UsageError(
            f"cannot pull {text!r}: corral pulls GGUF models from Hugging Face; "
            "name one as hf.co/ORG/REPO:QUANT (e.g. hf.co/ggml-org/gemma-3-1b-it-GGUF:Q4_K_M)"
        )
    repo, quant = found
    return f"{repo}:{quant}" if quant else repo


def listed_name(name: str) -> str:
    """A corral name as Ollama lists it: with a tag (``name:latest``)."""
    return name if ":" in name else f"{name}:latest"


# -- durations ---------------------------------------------------------------------------


def keep_alive_seconds(value) -> float | None:
    """Ollama's ``keep_alive`` in seconds: None when absent, < 0 = forever, 0 = unload now.

    Numbers are seconds; text is a Go duration (``"5m"``, ``"1h30m"``, ``"10s"``) or a
    number of seconds (``"300"``, ``"-1"``)."""
    if value is None:
        return None
    if _is_number(value):
        return float(value)
    if not isinstance(value, str):
        raise UsageError(f"keep_alive must be a duration like '5m' or seconds, not {value!r}")
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    parts = _DURATION_RE.findall(body)
    if not body or "".join(n + u for n, u in parts) != body:
        raise UsageError(f"keep_alive {value!r} is not a duration like '5m', '1h' or '30s'")
    return sign * sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def idle_ttl_for(keep_alive: float) -> float:
    """corral's ``idle_ttl`` for a ``keep_alive`` > 0 or < 0 (corral's 0 means never)."""
    return 0.0 if keep_alive < 0 else max(keep_alive, 1.0)


def rfc3339(ts: float | None) -> str:
    """A UNIX time as Ollama writes times (``2024-05-01T12:00:00.123456Z``)."""
    when = datetime.fromtimestamp(ts if ts is not None else 0, tz=timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def durations(answer: dict, total_s: float) -> dict:
    """Ollama's counters and durations (ns) from an answer's ``usage`` and ``timings``.

    ``load_duration`` is what the total leaves beyond prompt and generation: the wait
    for the model, the queue and the relay."""
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    timings = answer.get("timings") if isinstance(answer.get("timings"), dict) else {}

    def num(d: dict, key: str) -> float:
        v = d.get(key)
        return float(v) if _is_number(v) else 0.0

    prompt_ns = int(num(timings, "prompt_ms") * 1e6)
    eval_ns = int(num(timings, "predicted_ms") * 1e6)
    total_ns = int(total_s * 1e9)
    prompt_n = num(usage, "prompt_tokens") or num(timings, "prompt_n")
    eval_n = num(usage, "completion_tokens") or num(timings, "predicted_n")
    return {
        "total_duration": total_ns,
        "load_duration": max(0, total_ns - prompt_ns - eval_ns),
        "prompt_eval_count": int(prompt_n),
        "prompt_eval_duration": prompt_ns,
        "eval_count": int(eval_n),
        "eval_duration": eval_ns,
    }


# -- requests ----------------------------------------------------------------------------


def _option(name: str, value, kind):
    if kind is int and not _is_int(value):
        raise UsageError(f"option {name} must be an integer, not {value!r}")
    if kind is float and not _is_number(value):
        raise UsageError(f"option {name} must be a number, not {value!r}")
    if kind is bool and not isinstance(value, bool):
        raise UsageError(f"option {name} must be true or false, not {value!r}")
    return value


def map_options(options) -> dict:
    """Ollama ``options`` as OpenAI/llama-server body fields; wrong types are a UsageError.

    ``num_predict`` < 0 (Ollama's "no limit") is left out; unknown options are ignored,
    as Ollama does."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise UsageError("options must be an object")
    out: dict = {}
    for name, value in options.items():
        if value is None:
            continue
        if name == "stop":
            out["stop"] = _stop(value)
        elif name in OPTIONS:
            field, kind = OPTIONS[name]
            _option(name, value, kind)
            if name == "num_predict" and value < 0:
                continue
            out[field] = value
        elif name in LOAD_OPTIONS:
            _option(name, value, LOAD_OPTIONS[name])
    return out


def _stop(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return value
    raise UsageError("option stop must be a string or a list of strings")


def num_ctx_of(body: dict) -> int | None:
    """The ``options.num_ctx`` a request asks for (checked: a positive integer)."""
    options = body.get("options")
    if not isinstance(options, dict) or options.get("num_ctx") is None:
        return None
    n = options["num_ctx"]
    if not _is_int(n) or n < 1:
        raise UsageError(f"option num_ctx must be a positive integer, not {n!r}")
    return n


def check_num_ctx(n: int, context_length: int | None) -> None:
    """Refuse a ``num_ctx`` beyond the model's trained context or :data:`MAX_NUM_CTX`."""
    if n > MAX_NUM_CTX:
        raise UsageError(f"num_ctx {n} is larger than corral allows ({MAX_NUM_CTX})")
    if context_length and n > context_length:
        raise UsageError(f"num_ctx {n} is larger than the model's context length {context_length}")


def response_format(fmt) -> dict | None:
    """OpenAI's ``response_format`` for Ollama's ``format`` (``"json"`` or a schema)."""
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "format", "schema": fmt}}
    raise UsageError('format must be "json" or a JSON schema object')


def image_part(data) -> dict:
    """An OpenAI ``image_url`` part for one Ollama image (base64, maybe a data URL)."""
    if not isinstance(data, str) or not data:
        raise UsageError("images must be base64-encoded strings")
    if data.startswith("data:"):
        return {"type": "image_url", "image_url": {"url": data}}
    try:
        head = base64.b64decode(data, validate=True)[:16]
    except (binascii.Error, ValueError):
        raise UsageError("an image is not valid base64") from None
    mime = next((m for magic, m in _IMAGE_TYPES if head.startswith(magic)), "image/png")
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}


def _tool_calls_out(calls) -> list[dict]:
    """Ollama tool calls (arguments an object) as OpenAI's (arguments a JSON string)."""
    if not isinstance(calls, list):
        raise UsageError("tool_calls must be a list")
    out = []
    for i, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise UsageError("each tool call needs function.name")
        args = fn.get("arguments", {})
        text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
        out.append(
            {
                "id": call.get("id") or f"call_{i}",
                "type": "function",
                "function": {"name": fn["name"], "arguments": text},
            }
        )
    return out


def chat_messages(messages) -> tuple[list[dict], bool]:
    """OpenAI messages for Ollama ones, and whether any carries images."""
    if not isinstance(messages, list):
        raise UsageError("messages must be a list")
    out: list[dict] = []
    has_images = False
    call_ids: dict[str, str] = {}  # function name -> id of its last call
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise UsageError("each message needs a role")
        content = m.get("content", "")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise UsageError("message content must be a string")
        msg: dict = {"role": m["role"], "content": content}
        images = m.get("images")
        if images:
            if not isinstance(images, list):
                raise UsageError("images must be a list of base64 strings")
            has_images = True
            msg["content"] = [{"type": "text", "text": content}] + [image_part(i) for i in images]
        if m.get("tool_calls"):
            msg["tool_calls"] = _tool_calls_out(m["tool_calls"])
            call_ids.update({c["function"]["name"]: c["id"] for c in msg["tool_calls"]})
        if isinstance(m.get("thinking"), str) and m["thinking"]:
            msg["reasoning_content"] = m["thinking"]
        if m["role"] == "tool":
            name = m.get("tool_name") or m.get("name")
            if isinstance(name, str) and name in call_ids:
                msg["tool_call_id"] = call_ids[name]
        out.append(msg)
    return out, has_images


def _think(body: dict, out: dict) -> None:
    think = body.get("think")
    if think is None:
        return
    kwargs = dict(out.get("chat_template_kwargs") or {})
    if isinstance(think, bool):
        kwargs["enable_thinking"] = think
    elif think in ("low", "medium", "high"):
        kwargs["reasoning_effort"] = think
        out["reasoning_effort"] = think
    else:
        raise UsageError('think must be true, false, "low", "medium" or "high"')
    out["chat_template_kwargs"] = kwargs
    out["reasoning_format"] = "deepseek"  # the reasoning apart, as reasoning_content


def _common(body: dict, out: dict, stream: bool) -> dict:
    out.update(map_options(body.get("options")))
    fmt = response_format(body.get("format"))
    if fmt is not None:
        out["response_format"] = fmt
    _think(body, out)
    out["stream"] = stream
    if stream:
        out["stream_options"] = {"include_usage": True}
    return out


def chat_request(body: dict, model: str) -> tuple[dict, bool]:
    """(the OpenAI ``/v1/chat/completions`` body, has images) for an ``/api/chat`` body."""
    messages, has_images = chat_messages(body.get("messages") or [])
    out: dict = {"model": model, "messages": messages}
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise UsageError("tools must be a list of objects")
        out["tools"] = tools
    return _common(body, out, wants_stream(body)), has_images


def generate_request(body: dict, model: str) -> tuple[str, dict, bool]:
    """(endpoint, OpenAI body, has images) for an ``/api/generate`` body: a chat turn,
    with ``raw`` the prompt as it is to ``completions``, with ``suffix`` llama-server's
    ``/infill`` (fill in the middle: the prompt is what comes before the cursor)."""
    prompt = body.get("prompt") or ""
    system = body.get("system") or ""
    if not isinstance(prompt, str) or not isinstance(system, str):
        raise UsageError("prompt and system must be strings")
    images = body.get("images") or []
    stream = wants_stream(body)
    if body.get("suffix"):
        return "/infill", infill_request(body, model, prompt, stream), False
    if body.get("raw"):
        if images:
            raise UsageError("images need a chat template: not with raw")
        return "completions", _common(body, {"model": model, "prompt": prompt}, stream), False
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt, "images": images}
    ]
    converted, has_images = chat_messages(messages)
    out = _common(body, {"model": model, "messages": converted}, stream)
    return "chat/completions", out, has_images


def infill_request(body: dict, model: str, prompt: str, stream: bool) -> dict:
    """llama-server's ``/infill`` body for a generate with ``suffix`` (editor plugins'
    completion at the cursor, as Continue sends it to Ollama). Its sampling fields have
    the names the mapped options have (``max_tokens`` included)."""
    suffix = body["suffix"]
    if not isinstance(suffix, str):
        raise UsageError("suffix must be a string")
    if body.get("images"):
        raise UsageError("images cannot be combined with suffix (fill in the middle)")
    if body.get("format"):
        raise UsageError("format cannot be combined with suffix (fill in the middle)")
    out = {"model": model, "input_prefix": prompt, "input_suffix": suffix, "prompt": ""}
    out.update(map_options(body.get("options")))
    out["stream"] = stream
    return out


def native_answer(answer: dict) -> dict:
    """llama-server's own answer shape (``/infill``, ``/completion``: ``content``,
    ``stop_type``, token counts) as the OpenAI one the rest reads."""
    limit = answer.get("stop_type") == "limit"
    out: dict = {
        "choices": [{"text": answer.get("content"), "finish_reason": "length" if limit else "stop"}]
    }
    n_in, n_out = answer.get("tokens_evaluated"), answer.get("tokens_predicted")
    if _is_int(n_in) and _is_int(n_out):
        out["usage"] = {"prompt_tokens": n_in, "completion_tokens": n_out}
    if isinstance(answer.get("timings"), dict):
        out["timings"] = answer["timings"]
    return out


def is_empty(kind: str, body: dict) -> bool:
    """An empty request: Ollama's way to load (or, with keep_alive 0, unload) a model."""
    if kind == "chat":
        return not body.get("messages")
    return not body.get("prompt") and not body.get("images")


def embed_request(body: dict, model: str, legacy: bool) -> dict:
    """The OpenAI ``/v1/embeddings`` body for ``/api/embed`` (``input``) or the legacy
    ``/api/embeddings`` (``prompt``)."""
    value = body.get("prompt") if legacy else body.get("input")
    if isinstance(value, str):
        inputs = [value]
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        inputs = value
    else:
        raise UsageError(("prompt" if legacy else "input") + " must be a string or strings")
    out: dict = {"model": model, "input": inputs}
    dims = body.get("dimensions")
    if dims is not None:
        if not _is_int(dims) or dims < 1:
            raise UsageError("dimensions must be a positive integer")
        out["dimensions"] = dims
    return out


# -- answers -----------------------------------------------------------------------------


def error_message(status: int, raw: bytes) -> str:
    """The message of an OpenAI- or llama-server-shaped error body (or its text)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw.decode("utf-8", "replace").strip()[:2000] or f"error {status}"
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or err)
    if isinstance(err, str):
        return err
    return str(body)[:2000]


def tool_calls_in(calls) -> list[dict]:
    """OpenAI tool calls as Ollama's (arguments parsed into an object)."""
    out = []
    for i, call in enumerate(calls or ()):
        fn = call.get("function") or {}
        args = fn.get("arguments") or "{}"
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                args = {"arguments": args}
        out.append({"function": {"index": i, "name": fn.get("name", ""), "arguments": args}})
    return out


def _message(content: str, thinking: str | None, calls: list[dict] | None) -> dict:
    msg: dict = {"role": "assistant", "content": content}
    if thinking:
        msg["thinking"] = thinking
    if calls:
        msg["tool_calls"] = calls
    return msg


def _head(model: str) -> dict:
    return {"model": model, "created_at": rfc3339(time.time())}


def chat_answer(answer: dict, model: str, total_s: float, kind: str = "chat") -> dict:
    """The Ollama answer (``/api/chat`` or ``/api/generate``) for a whole OpenAI answer
    (or llama-server's own, from ``/infill``)."""
    if "choices" not in answer and "content" in answer:
        answer = native_answer(answer)
    choice = (answer.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    content = msg.get("content") or choice.get("text") or ""
    thinking = msg.get("reasoning_content")
    out = _head(model)
    if kind == "chat":
        out["message"] = _message(content, thinking, tool_calls_in(msg.get("tool_calls")))
    else:
        out["response"] = content
        if thinking:
            out["thinking"] = thinking
    out["done"] = True
    out["done_reason"] = _DONE_REASONS.get(choice.get("finish_reason") or "stop", "stop")
    out.update(durations(answer, total_s))
    return out


def empty_answer(kind: str, model: str, reason: str) -> dict:
    """The answer to an empty request: the model was loaded (``load``) or unloaded."""
    out = _head(model)
    if kind == "chat":
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    out.update(done=True, done_reason=reason)
    return out


def embed_answer(answer: dict, model: str, total_s: float, legacy: bool) -> dict:
    """The Ollama embeddings answer for an OpenAI one."""
    data = sorted(answer.get("data") or [], key=lambda d: d.get("index", 0))
    vectors = [d.get("embedding") for d in data]
    if legacy:
        return {"embedding": vectors[0] if vectors else []}
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    return {
        "model": model,
        "embeddings": vectors,
        "total_duration": int(total_s * 1e9),
        "load_duration": 0,
        "prompt_eval_count": int(usage.get("prompt_tokens") or 0),
    }


_stamps: list = [0, b""]  # (millisecond, its created_at): one strftime per ms at most


def _stamp() -> bytes:
    """``created_at`` for now, as bytes, shared by the lines of the same millisecond."""
    now = time.time()
    ms = int(now * 1000)
    if _stamps[0] != ms:
        _stamps[0], _stamps[1] = ms, rfc3339(now).encode()
    return _stamps[1]


_loads = json.JSONDecoder().decode

#: llama-server's chunk for one content token (nlohmann's key order: choices first, then
#: finish_reason, index, delta), matched on the bytes: most events of a chat stream, read
#: without parsing JSON. The string literal is group 1 (a non-empty one: an empty content
#: says nothing). Anything else -- a role, reasoning or tool-call delta, usage, timings,
#: an error -- takes the parsing path.
_TOKEN_CHUNK = re.compile(
    rb'data: ?\{"choices":\[\{"finish_reason":null,"index":0,"delta":\{"content":'
    rb'("(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})+")\}\}\]'
)
_CHAT_TEXT = b'"message":{"role":"assistant","content":'


def _token_literal(line: bytes) -> bytes | None:
    """The content's JSON string literal when ``line`` is a plain one-token chunk: a valid
    literal (JSON escapes, UTF-8) and nothing else the stream keeps after it (usage or
    timings, as with ``timings_per_token``); else None, and the line is parsed."""
    fast = _TOKEN_CHUNK.match(line)
    if fast is None:
        return None
    end = fast.end()
    if line.find(b'"usage"', end) >= 0 or line.find(b'"timings"', end) >= 0:
        return None
    literal = fast.group(1)
    if not literal.isascii():
        try:
            literal.decode()
        except UnicodeDecodeError:
            return None
    return literal


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def ndjson(obj: dict) -> bytes:
    """One NDJSON line."""
    return _dumps(obj).encode() + b"\n"


class StreamTranslator:
    """SSE from llama-server in, Ollama NDJSON lines out, chunk by chunk.

    ``feed`` takes the bytes as they arrive (split anywhere) and returns the lines ready
    to send; ``finish`` returns the last line (``done: true`` with the durations).
    Comments (``: loading``, the relay's heartbeats) are skipped; tool calls, which
    OpenAI streams in fragments, are sent whole in one line when the choice finishes;
    an SSE error event becomes Ollama's ``{"error": ...}`` line and ends the stream."""

    def __init__(self, kind: str, model: str, t0: float) -> None:
        self.kind, self.model, self.t0 = kind, model, t0
        self._model_json = _dumps(model).encode()
        self._pre: bytes | None = None  # a line's start (model, created_at), per read
        self._buf = b""
        self._calls: dict[int, dict] = {}
        self.reason = "stop"
        self.last: dict = {}  # usage and timings, from whichever chunks carried them
        self.failed = False
        self.ended = False

    def feed(self, data: bytes) -> list[bytes]:
        lines = (self._buf + data).split(b"\n") if self._buf else data.split(b"\n")
        self._buf = lines.pop()  # the part after the last newline: not whole yet
        self._pre = None  # the lines of one read share their created_at
        out: list[bytes] = []
        for line in lines:
            if self.ended:
                break
            if not line.startswith(b"data:"):
                continue  # blank separators, ": comments", event names
            literal = _token_literal(line) if self.kind == "chat" else None
            if literal is not None:
                out.append(self._text_line(literal))
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.ended = True
                break
            out.extend(self._event(payload))
        return out

    def _text_line(self, literal: bytes) -> bytes:
        """A chat line for one content token, its JSON string literal copied as it came
        (llama-server's escaping is valid JSON in a line of ours too)."""
        if self._pre is None:
            self._pre = b'{"model":' + self._model_json + b',"created_at":"' + _stamp() + b'",'
        return self._pre + _CHAT_TEXT + literal + b'},"done":false}\n'

    def _event(self, payload: bytes) -> list[bytes]:
        try:
            event = _loads(payload.decode())
        except ValueError:  # UnicodeDecodeError included
            return []
        if not isinstance(event, dict):
            return []
        if "error" in event:
            self.failed = self.ended = True
            return [ndjson({"error": error_message(500, payload)})]
        if "choices" not in event and "content" in event:  # /infill's own stream
            event = native_answer(event) if event.get("stop") else {"choices": [event]}
        for key in ("usage", "timings"):
            if isinstance(event.get(key), dict):
                self.last[key] = event[key]
        out = []
        choices = event.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            try:
                line = self._choice(choice)
            except (AttributeError, TypeError):  # not llama-server's shape: nothing to say
                continue
            if line is not None:
                out.append(line)
        return out

    def _choice(self, choice: dict) -> bytes | None:
        delta = choice.get("delta") or {}
        text = delta.get("content") or choice.get("text") or choice.get("content") or ""
        thinking = delta.get("reasoning_content") or ""
        for frag in delta.get("tool_calls") or ():
            call = self._calls.setdefault(frag.get("index", 0), {"name": "", "arguments": ""})
            fn = frag.get("function") or {}
            call["name"] += fn.get("name") or ""
            call["arguments"] += fn.get("arguments") or ""
        calls = None
        if choice.get("finish_reason"):
            self.reason = _DONE_REASONS.get(choice["finish_reason"], "stop")
            if self._calls:
                calls = tool_calls_in([{"function": self._calls[i]} for i in sorted(self._calls)])
                self._calls = {}
        if not text and not thinking and not calls:
            return None
        return self._delta_line(text, thinking, calls)

    def _delta_line(self, text: str, thinking: str, calls) -> bytes:
        """One line of the stream, as :meth:`_line` would give it, but built as bytes:
        this runs for every token of every Ollama stream."""
        if self._pre is None:
            stamp = _stamp()
            self._pre = b'{"model":' + self._model_json + b',"created_at":"' + stamp + b'",'
        if self.kind == "chat" and not thinking and not calls:  # most lines: text only
            body = b'"message":{"role":"assistant","content":' + _dumps(text).encode() + b"}"
        elif self.kind == "chat":
            body = b'"message":' + _dumps(_message(text, thinking, calls)).encode()
        else:
            body = b'"response":' + _dumps(text).encode()
            if thinking:
                body += b',"thinking":' + _dumps(thinking).encode()
        return self._pre + body + b',"done":false}\n'

    def _line(self, text: str, thinking: str, calls, done: bool) -> dict:
        out = _head(self.model)
        if self.kind == "chat":
            out["message"] = _message(text, thinking, calls)
        else:
            out["response"] = text
            if thinking:
                out["thinking"] = thinking
        out["done"] = done
        return out

    def finish(self) -> bytes:
        """The last line: ``done`` with the reason and the durations (empty after an error)."""
        if self.failed:
            return b""
        out = self._line("", "", None, done=True)
        out["done_reason"] = self.reason
        out.update(durations(self.last, time.perf_counter() - self.t0))
        return ndjson(out)


# -- the index, as Ollama shows it -----------------------------------------------------


def parameter_size(size_label: str | None, parameter_count: int | None) -> str:
    """``"268M"``, ``"7.2B"``: the GGUF's size label, else from its parameter count."""
    if size_label:
        return size_label
    if not parameter_count:
        return ""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if parameter_count >= scale:
            return f"{parameter_count / scale:.1f}{unit}".replace(".0", "")
    return str(parameter_count)


def details(metadata: dict, quant: str | None) -> dict:
    """Ollama's ``details`` of a model from its indexed GGUF metadata."""
    family = metadata.get("architecture") or ""
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family] if family else None,
        "parameter_size": parameter_size(
            metadata.get("size_label"), metadata.get("parameter_count")
        ),
        "quantization_level": quant or "",
    }


def digest(files: list[dict], fallback: str) -> str:
    """A model's digest: its first file's sha256 when known, else one of ``fallback``."""
    for f in files:
        if isinstance(f.get("sha256"), str) and len(f["sha256"]) == 64:
            return f["sha256"]
    return hashlib.sha256(fallback.encode()).hexdigest()


def model_info(kv: dict, verbose: bool = False) -> dict:
    """GGUF metadata for ``/api/show``: long arrays (the tokenizer's tables) left out
    (``None``, as Ollama does) unless ``verbose``; summaries of skipped arrays likewise."""
    out = {}
    for key, value in kv.items():
        if isinstance(value, list) and len(value) > SHOW_ARRAY_MAX and not verbose:
            value = None
        elif not isinstance(value, (str, int, float, bool, list, type(None))):
            value = None  # an array too long to read (gguf.ArraySummary)
        elif isinstance(value, float) and value != value:
            value = None
        out[key] = value
    return out


def capabilities(kv: dict, mmproj: bool) -> list[str]:
    """What a model can do, as Ollama names it, from its metadata and chat template."""
    arch = kv.get("general.architecture") or ""
    template = kv.get("tokenizer.chat_template") or ""
    caps = []
    embedder = "bert" in arch or kv.get(f"{arch}.pooling_type") not in (None, 0)
    if embedder:
        caps.append("embedding")
    else:
        caps.append("completion")
    if mmproj:
        caps.append("vision")
    if isinstance(template, str):
        if "tools" in template:
            caps.append("tools")
        if "<think>" in template or "enable_thinking" in template or "reasoning" in template:
            caps.append("thinking")
    return caps


def parameters_text(flags: list) -> str:
    """Ollama's ``parameters`` text (``num_ctx 4096``) from an instance's flag pairs."""
    lines = []
    for pair in flags or ():
        if len(pair) == 2 and pair[0] in FLAG_PARAMETERS and pair[1] is not None:
            lines.append(f"{FLAG_PARAMETERS[pair[0]]:<15} {pair[1]}")
    return "\n".join(lines)


def ctx_of(flags: list, argv: list) -> int | None:
    """The context size an instance was launched with (``--ctx-size`` / ``-c``)."""
    for pair in flags or ():
        if len(pair) == 2 and pair[0] in ("--ctx-size", "-c") and str(pair[1]).isdigit():
            return int(pair[1])
    args = list(argv or ())
    for i, arg in enumerate(args[:-1]):
        if arg in ("--ctx-size", "-c") and args[i + 1].isdigit():
            return int(args[i + 1])
    return None


def pull_lines(view: dict, sent: dict) -> list[dict]:
    """Ollama pull progress for a corral pull job's view, one line per file that moved
    since ``sent`` (path -> bytes last reported; updated here)."""
    out = []
    for path, prog in sorted((view.get("files") or {}).items()):
        done, total = int(prog.get("done") or 0), int(prog.get("total") or 0)
        if sent.get(path) == done:
            continue
        sent[path] = done
        name = path.rsplit("/", 1)[-1]
        out.append(
            {
                "status": f"downloading {name}",
                "digest": "sha256:" + hashlib.sha256(path.encode()).hexdigest(),
                "total": total,
                "completed": done,
            }
        )
    return out
