"""A fake ``llama-server`` for tests: same command line, same HTTP API, faults on demand.

Stdlib only. Run it as ``python tests/fakes/fake_llama_server.py ARGS`` or, better, through
:func:`tests.fakes.make_fake_binary`, which writes an executable ``llama-server`` script whose
process *is* the fake (no wrapper child), so pid / cmdline / process-group handling in the
supervisor sees what it would see with the real binary.

What it imitates (taken from the real llama.cpp server of the build in tests/fakes, see
``llama-server-help.txt`` / ``llama-server-version.txt``):

* ``--help`` / ``-h`` / ``--usage`` print the captured help text on stdout, exit 0;
  ``--version`` prints the captured version text on stderr, exit 0.
* Logs go to stderr, flushed per line, in the real format (stderr not a terminal):
  ``0.01.495.294 I srv  llama_server: listening on http://127.0.0.1:8080``. Startup,
  bind-failure, load-failure, "cleaning up" and per-request ``slot`` lines copy the real
  ones (the real server prints a few more).
* Model name (``/v1/models`` ``id``, ``model`` in answers): the first of the sorted
  ``--alias`` values, else the ``-m`` value exactly as given (the real one shows the full
  path). Command line parsing uses the flag table of the captured help text, so valued
  flags take their next token(s) like the real parser; unknown flags are ignored unless
  ``strict_args``. ``LLAMA_ARG_MODEL/HOST/PORT/ALIAS``, ``LLAMA_API_KEY`` are read too.
* The HTTP socket is bound *before* the model "loads"; while loading every route answers
  503 ``{"error":{"message":"Loading model","type":"unavailable_error","code":503}}``;
  afterwards ``/health`` answers 200 ``{"status":"ok"}``. The "listening on" line is
  printed after the model is loaded, like the real one. Streaming answers are SSE over
  chunked HTTP/1.1 (``data: {json}\n\n`` per token, a final chunk with
  ``finish_reason`` and ``timings``, then ``data: [DONE]``), as the real ones.
* A port that is taken (really, or via ``fail_bind``) prints the real bind-failure lines and
  exits 1. SIGTERM/SIGINT exit 0 promptly (after the real "cleaning up" line).
* ``-m`` naming a file that does not exist fails like the real server (exit 1 after the
  load error lines). Without ``-m`` the fake simply serves a model called ``fake-model``
  (the real one would start in router mode; corral always passes ``--model``).
* ``--api-key`` (comma separated, or ``LLAMA_API_KEY``) is enforced like the real one
  (401 except on /health, /v1/health). ``/v1/embeddings`` answers 501 unless the server was
  started with ``--embedding``/``--embeddings`` (or the ``embeddings`` knob is true).

Behaviour knobs: a JSON sidecar ``<model path>.fake.json`` (object), overridden by
environment variables ``FAKE_LLAMA_<KEY>`` (values parsed as JSON when possible, so
``1``, ``0.5``, ``true`` work; ``yes``/``on``/``no``/``off`` too):

==================  =========  =======================================================
key                 default    meaning
==================  =========  =======================================================
load_seconds        0.2        time spent "loading" (503 on every route meanwhile)
exit_during_load    null       int: print a load error and exit with it at load/2
fail_bind           false      behave as if the port were taken: bind error, exit 1
ignore_sigterm      false      SIGTERM and SIGINT are logged and ignored
tokens              8          tokens per completion (natural end, finish "stop")
token_delay         0.01       seconds per generated token (streaming and not)
hang                false      become hung right after loading (see /_fake/hang)
hang_after          0          with hang: seconds after ready before hanging
crash_after         null       float: os._exit(crash_code) this long after ready
crash_code          1          exit code for crash_after
embeddings          null       true/false forces /v1/embeddings on/off (null: flag)
strict_args         false      reject flags the captured --help does not list, like
                               the real one ("error: invalid argument: X", exit 1)
==================  =========  =======================================================

Inference endpoints (the paths of llama-server's ``server.cpp``, answer shapes copied
from its ``server-task.cpp``): ``/v1/chat/completions`` (also bare; ``stream``,
``tools`` -> a ``tool_calls`` answer when the last user message says "call",
``response_format`` json_object / json_schema -> JSON text, ``usage`` and ``timings``),
``/v1/completions`` (OpenAI) and ``/completion``, ``/completions``, ``/infill`` (llama.cpp's
own shape: ``content``, ``stop``, ``timings``; a stream ends without ``[DONE]``),
``/v1/responses`` (stream: ``response.created`` ... ``response.completed``),
``/v1/messages`` (Anthropic: ``message_start``, ``content_block_start``,
``content_block_delta`` ..., ``message_delta``, ``message_stop``),
``/v1/messages/count_tokens`` and ``.../input_tokens`` (``{"input_tokens": N}``),
``/v1/embeddings`` (OpenAI) and ``/embedding(s)`` (``[{"index", "embedding"}]``),
``/rerank`` and its three other paths (501 unless ``--reranking``), ``/tokenize`` and
``/detokenize`` (a vocabulary grown as words are seen, so the two round-trip),
``/apply-template`` (``{"prompt": ...}`` in Gemma's turn format),
``/v1/audio/transcriptions`` (multipart with a ``file`` part -> ``{"text": ...}``).

Control endpoints (answered even while loading, never need an API key):

* ``POST /_fake/crash?code=N``  answer, flush, then ``os._exit(N)`` (default 1)
* ``POST /_fake/hang``          from now on every request (including /health and these
                                control endpoints) blocks forever; the socket stays open
* ``POST /_fake/ignore-sigterm``  ignore SIGTERM/SIGINT from now on
* ``GET  /_fake/state``         pid, model, port, requests, cancelled, loading, hung, ...
* ``GET  /_fake/requests``      every API request received (not /_fake/*), oldest first:
                                ``{"method", "path", "model", "headers"}`` (header names
                                lower-case; ``model`` from the JSON body or form field)

``requests`` in the state counts finished API requests (not /_fake/*); ``cancelled``
counts streams stopped because the client went away.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import signal
import socket
import string
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

HERE = Path(__file__).resolve().parent
HELP_TEXT_PATH = HERE / "llama-server-help.txt"
VERSION_TEXT_PATH = HERE / "llama-server-version.txt"

# Which stream the real binary uses (checked against the real build).
HELP_STREAM = "stdout"
VERSION_STREAM = "stderr"

DEFAULTS: dict[str, object] = {
    "load_seconds": 0.2,
    "exit_during_load": None,
    "fail_bind": False,
    "ignore_sigterm": False,
    "tokens": 8,
    "token_delay": 0.01,
    "hang": False,
    "hang_after": 0.0,
    "crash_after": None,
    "crash_code": 1,
    "embeddings": None,
    "strict_args": False,
}

# Flags that take no value (switches). Anything else starting with '-' is assumed to take
# a value when the next token does not look like a flag. When the captured help text is
# present, it is used instead (exact), see _flag_catalog().
_SWITCH_HINT = {
    "--embedding",
    "--embeddings",
    "--metrics",
    "--slots",
    "--no-slots",
    "--props",
    "--verbose",
    "-v",
    "--log-verbose",
    "--no-mmap",
    "--mlock",
    "--cont-batching",
    "--no-cont-batching",
    "-cb",
    "-nocb",
    "--jinja",
    "--no-jinja",
    "--flash-attn",
    "--no-webui",
    "--webui",
    "--reranking",
    "--rerank",
    "--no-warmup",
    "--kv-unified",
    "--log-disable",
    "--log-colors",
    "--log-prefix",
    "--log-timestamps",
    "--offline",
    "--check-tensors",
    "--no-perf",
    "--perf",
    "--mmap",
    "--direct-io",
    "--no-direct-io",
    "--cpu-strict",
    "--prio-batch",
    "--no-kv-offload",
    "-nkvo",
    "--context-shift",
    "--no-context-shift",
    "--swa-full",
    "--special",
    "-sp",
    "--escape",
    "--no-escape",
    "--lora-init-without-apply",
    "--cache-reuse-all",
    "--no-op-offload",
}

_WORDS = [
    "Hello",
    ",",
    " I",
    " am",
    " a",
    " fake",
    " llama",
    " server",
    ".",
    " How",
    " can",
    " I",
    " help",
    " you",
    " today",
    "?",
]

_LOG_LOCK = threading.Lock()
_T0 = time.monotonic()


def _stamp() -> str:
    """The real log timestamp, time since start as ``M.SS.mmm.uuu``."""
    us = int((time.monotonic() - _T0) * 1_000_000)
    return f"{us // 60_000_000}.{us // 1_000_000 % 60:02d}.{us // 1000 % 1000:03d}.{us % 1000:03d}"


def log(msg: str, level: str = "I") -> None:
    """One log line on stderr, flushed, as the real server writes it when stderr is not a
    terminal: ``0.01.495.294 I srv  llama_server: listening on http://127.0.0.1:8080``."""
    with _LOG_LOCK:
        try:
            sys.stderr.write(f"{_stamp()} {level} {msg.rstrip()}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


def srv(func: str, msg: str, level: str = "I") -> None:
    """The real SRV_INF/SRV_WRN/SRV_ERR format: ``srv  %12.*s: msg``."""
    log(f"srv  {func[:12]:>12}: {msg}", level)


def cmn(func: str, msg: str, level: str = "I") -> None:
    log(f"cmn  {func[:12]:>12}: {msg}", level)


def slot(func: str, task: int, msg: str) -> None:
    log(f"slot {func[:12]:>12}: id {0:2d} | task {task} | {msg}")


def _flush_all() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


# --------------------------------------------------------------------------- config


def _parse_env_value(raw: str) -> object:
    low = raw.strip().lower()
    if low in ("yes", "on", "true"):
        return True
    if low in ("no", "off", "false", ""):
        return False
    if low in ("none", "null"):
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def load_config(model: str | None, environ: dict[str, str] | None = None) -> dict[str, object]:
    environ = dict(os.environ if environ is None else environ)
    cfg = dict(DEFAULTS)
    if model:
        sidecar = Path(model + ".fake.json")
        if sidecar.is_file():
            try:
                data = json.loads(sidecar.read_text() or "{}")
            except ValueError as e:
                log(f"fake-llama: bad sidecar {sidecar}: {e}")
                data = {}
            if isinstance(data, dict):
                cfg.update({str(k).lower(): v for k, v in data.items()})
    for key, raw in environ.items():
        if key.startswith("FAKE_LLAMA_"):
            cfg[key[len("FAKE_LLAMA_") :].lower()] = _parse_env_value(raw)
    return cfg


def _truthy(v: object) -> bool:
    if isinstance(v, str):
        return _parse_env_value(v) is True
    return bool(v)


def _num(v: object, default: float) -> float:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


# --------------------------------------------------------------------------- args


_CATALOG: dict[str, int] | None = None
_CATALOG_LOADED = False


def _flag_catalog() -> dict[str, int] | None:
    """flag -> number of values it takes (0 for a switch), from the captured help text.

    Help lines look like ``-c,    --ctx-size N      help...`` or, when the flag part is long,
    ``--spec-draft-type-k, -ctkd, --cache-type-k-draft TYPE`` alone on its line; the
    value hints follow the last flag name (``--control-vector-layer-range START END``
    takes two).
    """
    global _CATALOG, _CATALOG_LOADED
    if _CATALOG_LOADED:
        return _CATALOG
    _CATALOG_LOADED = True
    try:
        text = HELP_TEXT_PATH.read_text()
    except OSError:
        return None
    catalog: dict[str, int] = {}
    for line in text.splitlines():
        if not line.startswith("-") or line.startswith("-----"):
            continue
        names: list[str] = []
        rest = line
        while True:
            m = re.match(r"(-[\w.\-]*\w)(,\s*)?", rest)
            if not m:
                break
            names.append(m.group(1))
            rest = rest[m.end() :]
            if not m.group(2):
                break
        if rest and not rest.startswith(" "):  # not a flag line after all
            continue
        # a value hint follows the last name after exactly one space; the help text
        # starts after a run of spaces (or on the next line)
        head = "" if rest.startswith("  ") else re.split(r"\s{2,}", rest.strip(), maxsplit=1)[0]
        n_values = len(re.sub(r"<[^>]*>", "V", head).split())  # "<tensor name pattern>=..."
        for name in names:
            catalog[name] = n_values
    _CATALOG = catalog or None
    return _CATALOG


class Args:
    def __init__(self) -> None:
        self.model: str | None = None
        self.host = "127.0.0.1"
        self.port = 8080
        self.aliases: list[str] = []
        self.api_keys: list[str] = []
        self.embeddings = False
        self.reranking = False
        self.help = False
        self.version = False
        self.unknown: list[str] = []


def parse_args(argv: list[str], environ: dict[str, str] | None = None) -> Args:
    environ = dict(os.environ if environ is None else environ)
    a = Args()
    # environment first (the real server reads LLAMA_ARG_*; the command line wins)
    if environ.get("LLAMA_ARG_MODEL"):
        a.model = environ["LLAMA_ARG_MODEL"]
    if environ.get("LLAMA_ARG_HOST"):
        a.host = environ["LLAMA_ARG_HOST"]
    if environ.get("LLAMA_ARG_PORT"):
        try:
            a.port = int(environ["LLAMA_ARG_PORT"])
        except ValueError:
            pass
    if environ.get("LLAMA_ARG_ALIAS"):
        a.aliases = [s.strip() for s in environ["LLAMA_ARG_ALIAS"].split(",") if s.strip()]
    if environ.get("LLAMA_API_KEY"):
        a.api_keys = [s.strip() for s in environ["LLAMA_API_KEY"].split(",") if s.strip()]
    if _truthy(environ.get("LLAMA_ARG_EMBEDDINGS", "")):
        a.embeddings = True

    catalog = _flag_catalog()
    i = 0
    while i < len(argv):
        tok = argv[i]
        i += 1
        if not tok.startswith("-") or tok == "-":
            a.unknown.append(tok)
            continue
        name, eq, inline = tok.partition("=")
        if name.startswith("--"):
            name = name.replace("_", "-")
        if eq:  # the real parser has no --flag=value form: strict mode rejects it
            a.unknown.append(tok)

        def value(eq: str = eq, inline: str = inline) -> str | None:
            nonlocal i
            if eq:
                return inline
            if i < len(argv):
                i += 1
                return argv[i - 1]
            return None

        if name in ("-h", "--help", "--usage"):
            a.help = True
        elif name == "--version":
            a.version = True
            return a  # the real one exits on --version as soon as it sees it
        elif name in ("-m", "--model"):
            a.model = value()
        elif name == "--host":
            a.host = value() or a.host
        elif name == "--port":
            v = value()
            try:
                a.port = int(v) if v is not None else a.port
            except ValueError:
                a.unknown.append(tok)
        elif name in ("-a", "--alias"):
            v = value() or ""
            a.aliases = [s.strip() for s in v.split(",") if s.strip()]
        elif name == "--api-key":
            v = value() or ""
            a.api_keys += [s.strip() for s in v.split(",") if s.strip()]
        elif name == "--api-key-file":
            v = value()
            try:
                # as llama-server: every line not empty and not starting with '#', as is
                lines = Path(v or "").read_text().split("\n")
                a.api_keys += [ln for ln in lines if ln and not ln.startswith("#")]
            except OSError:
                pass
        elif name in ("--embedding", "--embeddings"):
            a.embeddings = True
        elif name in ("--no-embedding", "--no-embeddings"):
            a.embeddings = False
        elif name in ("--reranking", "--rerank"):
            a.reranking = True
        else:
            if catalog is not None and name in catalog:
                # exact: the real parser takes the next token(s) whatever they look like
                n_values = 0 if eq else catalog[name]
                i = min(len(argv), i + n_values)
                continue
            if catalog is not None:
                a.unknown.append(name)
            if name not in _SWITCH_HINT and not eq and i < len(argv):
                nxt = argv[i]
                if not nxt.startswith("-") or _is_number(nxt):
                    i += 1
    # the real server keeps aliases in a sorted set; the first one names the model
    a.aliases = sorted(set(a.aliases))
    return a


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- state


def _cmdline() -> list[str]:
    try:
        raw = Path(f"/proc/{os.getpid()}/cmdline").read_bytes()
        return [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    except OSError:
        return list(sys.argv)


def _rand_id(n: int = 32) -> str:
    return "".join(random.choice(string.ascii_letters + string.digits) for _ in range(n))


def _build_info() -> str:
    """``b<build>-<commit>`` like llama_build_info(), from the captured version text."""
    try:
        text = VERSION_TEXT_PATH.read_text()
    except OSError:
        return "b0-fake"
    for line in text.splitlines():
        if line.startswith("version:") and "(build " in line and "commit " in line:
            try:
                build = line.split("(build ", 1)[1].split(",", 1)[0].strip()
                commit = line.split("commit ", 1)[1].split(")", 1)[0].strip()
                return f"b{build}-{commit}"
            except IndexError:
                break
    return "b0-fake"


class State:
    def __init__(self, args: Args, cfg: dict[str, object]) -> None:
        self.args = args
        self.cfg = cfg
        self.pid = os.getpid()
        self.model_path = args.model
        # like the real one: the first (sorted) alias, else the -m value exactly as given
        # (the real /v1/models shows the full path), with the path as the only alias
        if args.aliases:
            self.model_name = args.aliases[0]
            self.aliases = list(args.aliases)
        else:
            self.model_name = args.model or "fake-model"
            self.aliases = [self.model_name]
        self.port = args.port
        self.lock = threading.Lock()
        self.loading = True
        self.hung = False
        self.ignore_sigterm = _truthy(cfg.get("ignore_sigterm"))
        self.requests = 0
        self.cancelled = 0
        self.in_flight = 0
        self.started_at = time.time()
        self.ready_at: float | None = None
        emb = cfg.get("embeddings")
        self.embeddings = args.embeddings if emb is None else _truthy(emb)
        self.fingerprint = _build_info()
        self.forever = threading.Event()  # never set: hung requests wait on it
        self.tasks = 0
        self.reranking = args.reranking
        self.received: list[dict[str, object]] = []  # see GET /_fake/requests
        self.vocab: dict[str, int] = {}  # piece -> id, grown by /tokenize
        self.pieces: dict[int, str] = {}

    def record(self, method: str, path: str, headers, body: bytes) -> None:
        entry = {
            "method": method,
            "path": path,
            "model": _model_of(headers.get("Content-Type") or "", body),
            "headers": {k.lower(): v for k, v in headers.items()},
        }
        with self.lock:
            self.received.append(entry)
            del self.received[:-1000]

    def token_ids(self, text: str) -> list[tuple[int, str]]:
        """(id, piece) for each word-with-its-leading-space of ``text``."""
        out = []
        with self.lock:
            for piece in re.findall(r"\s*\S+|\s+", text):
                tid = self.vocab.get(piece)
                if tid is None:
                    tid = self.vocab[piece] = 1000 + len(self.vocab)
                    self.pieces[tid] = piece
                out.append((tid, piece))
        return out

    def snapshot(self) -> dict[str, object]:
        with self.lock:
            return {
                "pid": self.pid,
                "model": self.model_name,
                "model_path": self.model_path,
                "aliases": list(self.aliases),
                "host": self.args.host,
                "port": self.port,
                "requests": self.requests,
                "cancelled": self.cancelled,
                "in_flight": self.in_flight,
                "loading": self.loading,
                "hung": self.hung,
                "ignore_sigterm": self.ignore_sigterm,
                "embeddings": self.embeddings,
                "started_at": self.started_at,
                "ready_at": self.ready_at,
                "cmdline": _cmdline(),
                "config": self.cfg,
            }

    def block_if_hung(self) -> None:
        if self.hung:
            self.forever.wait()

    def next_task(self) -> int:
        with self.lock:
            self.tasks += 1
            return self.tasks - 1

    def hang(self) -> None:
        with self.lock:
            self.hung = True


STATE: State | None = None


# --------------------------------------------------------------------------- http


def _error_body(message: str, type_: str, code: int) -> dict[str, object]:
    """format_error_response() key order: code, message, type."""
    return {"error": {"code": code, "message": message, "type": type_}}


# The middleware answers (loading, 401, 404) use another key order: message, type, code.
LOADING_BODY = {"error": {"message": "Loading model", "type": "unavailable_error", "code": 503}}
NOT_FOUND_BODY = {"error": {"message": "File Not Found", "type": "not_found_error", "code": 404}}
UNAUTHORIZED_BODY = {
    "error": {"message": "Invalid API Key", "type": "authentication_error", "code": 401}
}


def _count_tokens(value: object) -> int:
    """A cheap deterministic 'token' count: words + 1 (BOS)."""
    if isinstance(value, str):
        return len(value.split()) + 1
    if isinstance(value, list):
        return sum(_count_tokens(v) for v in value) or 1
    if isinstance(value, dict):
        return _count_tokens(value.get("content", value.get("text", ""))) + 3
    return 1


def _form_fields(content_type: str, body: bytes) -> dict[str, bytes]:
    """name -> value of each part of a multipart/form-data body (files too)."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m or not content_type.lower().startswith("multipart/form-data"):
        return {}
    out = {}
    for part in body.split(b"--" + m.group(1).encode())[1:]:
        head, sep, value = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        if sep and name:
            out[name.group(1).decode()] = value[:-2] if value.endswith(b"\r\n") else value
    return out


def _model_of(content_type: str, body: bytes) -> str | None:
    if content_type.lower().startswith("multipart/"):
        value = _form_fields(content_type, body).get("model")
        return value.decode(errors="replace") if value is not None else None
    try:
        data = json.loads(body or b"null")
    except ValueError:
        return None
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) else None


def _fake_value(schema: object) -> object:
    """A value that satisfies a (simple) JSON schema: what a grammar would force."""
    if not isinstance(schema, dict):
        return "fake"
    if "enum" in schema and isinstance(schema["enum"], list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = kind[0] if kind else "string"
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        return {k: _fake_value(v) for k, v in props.items()}
    if kind == "array":
        return [_fake_value(schema.get("items"))]
    return {"integer": 1, "number": 1.5, "boolean": True, "null": None}.get(str(kind), "fake")


def _forced_text(body: dict) -> str | None:
    """The JSON text a ``response_format`` forces, or None."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return json.dumps({"answer": "Hello"})
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") if isinstance(fmt.get("json_schema"), dict) else {}
        return json.dumps(_fake_value(spec.get("schema", spec)))
    return None


def _tool_call(body: dict) -> dict | None:
    """A call of the first tool, when tools are given and the last user message says "call"."""
    tools = body.get("tools")
    msgs = body.get("messages")
    if not isinstance(tools, list) or not tools or not isinstance(msgs, list):
        return None
    users = [m for m in msgs if isinstance(m, dict) and m.get("role") == "user"]
    text = users[-1].get("content") if users else ""
    if not isinstance(text, str) or "call" not in text.lower():
        return None
    fn = tools[0].get("function") if isinstance(tools[0], dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        return None
    args = _fake_value(fn.get("parameters") or {"type": "object"})
    return {
        "type": "function",
        "function": {"name": fn["name"], "arguments": json.dumps(args)},
        "id": _rand_id(),
    }


def _gemma_prompt(messages: list) -> str:
    out = []
    for m in messages:
        if isinstance(m, dict):
            role = "model" if m.get("role") == "assistant" else m.get("role", "user")
            content = m.get("content")
            text = content if isinstance(content, str) else json.dumps(content)
            out.append(f"<start_of_turn>{role}\n{text}<end_of_turn>\n")
    return "<bos>" + "".join(out) + "<start_of_turn>model\n"


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # SO_REUSEADDR (the default here) lets us rebind a port in TIME_WAIT, but on Linux it
    # does not allow binding a port somebody is LISTENING on: that still fails EADDRINUSE.
    allow_reuse_address = True
    # llama-server (cpp-httplib) listens with a deep backlog; socketserver's default of 5
    # would reset connections under the router's concurrency tests.
    request_queue_size = 128

    def server_bind(self) -> None:  # skip HTTPServer's getfqdn() (slow DNS lookups)
        import socketserver

        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = port

    def handle_error(self, request, client_address) -> None:  # quiet on client resets
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, BrokenPipeError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class ClientGone(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "llama.cpp"
    sys_version = ""

    def version_string(self) -> str:
        return "llama.cpp"

    def end_headers(self) -> None:
        # the real server sends an (empty) CORS header and keep-alive on every answer
        self.send_header("Access-Control-Allow-Origin", "")
        if self.close_connection:
            self.send_header("Connection", "close")
        else:
            self.send_header("Keep-Alive", "timeout=5, max=100")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    # ---- plumbing

    @property
    def st(self) -> State:
        assert STATE is not None
        return STATE

    def _send_json(self, status: int, obj: object) -> None:
        data = json.dumps(obj, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _error(self, message: str, type_: str, code: int) -> None:
        self._send_json(code, _error_body(message, type_, code))

    def _read_body(self) -> bytes:
        cached = getattr(self, "_body", None)
        if cached is not None:  # read once per request (recorded, then handled)
            return cached
        n = int(self.headers.get("Content-Length") or 0)
        self._body = self.rfile.read(n) if n > 0 else b""
        return self._body

    def _json_body(self) -> dict | None:
        raw = self._read_body()
        try:
            data = json.loads(raw.decode("utf-8") if raw else "")
        except json.JSONDecodeError as e:
            msg = (
                f"[json.exception.parse_error.101] parse error at line {e.lineno}, column "
                f"{e.colno}: syntax error while parsing value - {e.msg}"
            )
            self._exception(msg)
            return None
        except (ValueError, UnicodeDecodeError) as e:
            self._exception(f"[json.exception.parse_error.101] parse error: {e}")
            return None
        if not isinstance(data, dict):
            self._exception("request body must be a JSON object")
            return None
        return data

    def _exception(self, message: str) -> None:
        """What the real ex_wrapper does with a bad request: log it, answer 400, close."""
        body = _error_body(message, "invalid_request_error", 400)
        srv("operator()", "got exception: " + json.dumps(body, separators=(",", ":")), "W")
        self.close_connection = True
        self._send_json(400, body)

    def _chunk(self, text: str) -> None:
        data = text.encode()
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, OSError) as e:
            raise ClientGone() from e

    def _end_chunks(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError as e:
            raise ClientGone() from e

    # ---- dispatch

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_OPTIONS(self) -> None:
        self.st.block_if_hung()
        self.send_response(200)
        self.send_header("Access-Control-Allow-Methods", "GET, POST")
        self.send_header("Access-Control-Allow-Headers", "*")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _dispatch(self, method: str) -> None:
        st = self.st
        st.block_if_hung()
        url = urlsplit(self.path)
        path = url.path
        query = parse_qs(url.query)

        self._body = None
        if path.startswith("/_fake/"):
            self._control(method, path, query)
            return
        st.record(method, path, self.headers, self._read_body())

        if st.loading and path != "/":
            self._read_body()
            self._send_json(503, LOADING_BODY)
            return

        if st.args.api_keys and path not in ("/health", "/v1/health"):
            auth = self.headers.get("Authorization") or self.headers.get("X-Api-Key") or ""
            if auth.startswith("Bearer "):
                auth = auth[len("Bearer ") :]
            if auth not in st.args.api_keys:
                self._read_body()
                self._send_json(401, UNAUTHORIZED_BODY)
                srv("operator()", "unauthorized: Invalid API Key", "W")
                return

        with st.lock:
            st.in_flight += 1
        try:
            self._route(method, path)
        finally:
            with st.lock:
                st.in_flight -= 1
                st.requests += 1

    def _route(self, method: str, path: str) -> None:
        st = self.st
        if method == "GET" and path in ("/health", "/v1/health"):
            self._send_json(200, {"status": "ok"})
        elif method == "GET" and path in ("/models", "/v1/models"):
            self._send_json(200, self._models())
        elif method == "GET" and path == "/props":
            self._send_json(
                200,
                {
                    "model_alias": st.model_name,
                    "model_path": st.model_path or "",
                    "total_slots": 4,
                    "build_info": st.fingerprint,
                },
            )
        elif method == "GET" and path == "/":
            body = b"<!doctype html><title>llama.cpp (fake)</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif method == "POST" and path in ("/v1/chat/completions", "/chat/completions"):
            self._completion(chat=True)
        elif method == "POST" and path == "/v1/completions":
            self._completion(chat=False)
        elif method == "POST" and path in POSTS:
            getattr(self, POSTS[path])()
        else:
            self._read_body()
            self.close_connection = True
            self._send_json(404, NOT_FOUND_BODY)

    # ---- control

    def _control(self, method: str, path: str, query: dict[str, list[str]]) -> None:
        st = self.st
        self._read_body()
        if path == "/_fake/state" and method == "GET":
            self._send_json(200, st.snapshot())
        elif path == "/_fake/crash" and method == "POST":
            try:
                code = int((query.get("code") or ["1"])[0])
            except ValueError:
                code = 1
            self._send_json(200, {"ok": True, "exiting": code})
            _exit_soon(code, f"fake-llama: crashing with exit code {code}")
        elif path == "/_fake/requests" and method == "GET":
            with st.lock:
                received = list(st.received)
            self._send_json(200, received)
        elif path == "/_fake/hang" and method == "POST":
            st.hang()  # before answering: the next request must already hang
            log("fake-llama: hanging: no request will be answered from now on", "W")
            self._send_json(200, {"ok": True, "hung": True})
        elif path == "/_fake/ignore-sigterm" and method == "POST":
            with st.lock:
                st.ignore_sigterm = True
            self._send_json(200, {"ok": True, "ignore_sigterm": True})
        else:
            self._send_json(404, NOT_FOUND_BODY)

    # ---- API

    def _models(self) -> dict[str, object]:
        st = self.st
        size = 0
        if st.model_path:
            try:
                size = os.path.getsize(st.model_path)
            except OSError:
                size = 0
        return {
            "models": [
                {
                    "name": st.model_name,
                    "model": st.model_name,
                    "modified_at": "",
                    "size": "",
                    "digest": "",
                    "type": "model",
                    "description": "",
                    "tags": [""],
                    "capabilities": ["completion"],
                    "parameters": "",
                    "details": {
                        "parent_model": "",
                        "format": "gguf",
                        "family": "",
                        "families": [""],
                        "parameter_size": "",
                        "quantization_level": "",
                    },
                }
            ],
            "object": "list",
            "data": [
                {
                    "id": st.model_name,
                    "aliases": list(st.aliases),
                    "tags": [],
                    "object": "model",
                    "created": int(time.time()),
                    "owned_by": "llamacpp",
                    "meta": {
                        "vocab_type": 1,
                        "n_vocab": 32000,
                        "n_ctx": 4096,
                        "n_ctx_train": 32768,
                        "n_embd": 640,
                        "n_params": 268098176,
                        "size": size,
                        "ftype": "Q4_K - Medium",
                    },
                }
            ],
        }

    def _completion(self, chat: bool) -> None:
        st = self.st
        body = self._json_body()
        if body is None:
            return
        if chat:
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs:
                self._exception("'messages' is required")
                return
            n_prompt = _count_tokens(msgs)
        else:
            if "prompt" not in body:
                self._exception('"prompt" must be provided')
                return
            n_prompt = _count_tokens(body.get("prompt"))
        n_natural = max(0, int(_num(st.cfg.get("tokens"), 8)))
        limit = None
        for key in ("max_completion_tokens", "max_tokens", "n_predict"):
            v = body.get(key)
            if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
                limit = v
                break
        n_gen = n_natural if limit is None else min(n_natural, limit)
        finish = "length" if (limit is not None and limit < n_natural) else "stop"
        delay = max(0.0, _num(st.cfg.get("token_delay"), 0.01))
        model = st.model_name
        cid = "chatcmpl-" + _rand_id()
        pieces = [_WORDS[i % len(_WORDS)] for i in range(n_gen)]
        call = _tool_call(body) if chat else None
        forced = _forced_text(body)
        if call is not None:  # one tool call instead of text
            pieces, n_gen, finish = [], 1, "tool_calls"
        elif forced is not None:  # the grammar forces JSON: all of it, whatever the limit
            pieces = [forced[i : i + 6] for i in range(0, len(forced), 6)]
            n_gen, finish = len(pieces), "stop"
        t0 = time.monotonic()
        prompt_ms = 0.5 * n_prompt
        task = st.next_task()
        slot("launch_slot_", task, "processing task, is_child = 0")

        def done(n_done: int) -> None:
            t = timings(n_done)
            slot(
                "print_timing",
                task,
                f"       eval time = {t['predicted_ms']:10.2f} ms / "
                f"{n_done:5d} tokens ({t['predicted_per_token_ms']:8.2f} ms per token, "
                f"{t['predicted_per_second']:8.2f} tokens per second)",
            )
            slot(
                "     release",
                task,
                f"stop processing: n_tokens = {n_prompt + n_done}, truncated = 0",
            )

        def timings(n_done: int) -> dict[str, object]:
            gen_ms = max((time.monotonic() - t0) * 1000.0, 1e-3)
            return {
                "cache_n": 0,
                "prompt_n": n_prompt,
                "prompt_ms": prompt_ms,
                "prompt_per_token_ms": prompt_ms / max(n_prompt, 1),
                "prompt_per_second": 1000.0 * n_prompt / max(prompt_ms, 1e-3),
                "predicted_n": n_done,
                "predicted_ms": gen_ms,
                "predicted_per_token_ms": gen_ms / max(n_done, 1),
                "predicted_per_second": 1000.0 * n_done / gen_ms,
            }

        def usage(n_done: int) -> dict[str, object]:
            return {
                "completion_tokens": n_done,
                "prompt_tokens": n_prompt,
                "total_tokens": n_done + n_prompt,
                "prompt_tokens_details": {"cached_tokens": 0},
            }

        def base(obj: str) -> dict[str, object]:
            return {
                "created": int(time.time()),
                "id": cid,
                "model": model,
                "system_fingerprint": st.fingerprint,
                "object": obj,
            }

        if not body.get("stream"):
            for _ in pieces:
                st.block_if_hung()
                if delay:
                    time.sleep(delay)
                if self._peer_closed():  # llama-server checks is_connection_closed() too
                    with st.lock:
                        st.cancelled += 1
                    self.close_connection = True
                    slot(
                        "     release", task, "stop processing: client disconnected, task cancelled"
                    )
                    return
            st.block_if_hung()
            text = "".join(pieces)
            if chat:
                res = {
                    "choices": [
                        {
                            "finish_reason": finish,
                            "index": 0,
                            "message": (
                                {"role": "assistant", "content": None, "tool_calls": [call]}
                                if call
                                else {"role": "assistant", "content": text}
                            ),
                        }
                    ]
                }
                res.update(base("chat.completion"))
            else:
                res = {
                    "choices": [
                        {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
                    ]
                }
                res.update(base("text_completion"))
            res["usage"] = usage(n_gen)
            res["timings"] = timings(n_gen)
            done(n_gen)
            self._send_json(200, res)
            return

        include_usage = (
            bool((body.get("stream_options") or {}).get("include_usage"))
            if isinstance(body.get("stream_options"), dict)
            else False
        )
        self.send_response(200)
        self.send_header("X-Accel-Buffering", "no")
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def sse(obj: object) -> str:
            return "data: " + json.dumps(obj, separators=(",", ":")) + "\n\n"

        def chat_delta(delta: dict[str, object]) -> dict:
            # partial chunks carry no timings (only the last chunk does), like the real one
            d = {"choices": [{"finish_reason": None, "index": 0, "delta": delta}]}
            d.update(base("chat.completion.chunk"))
            return d

        try:
            for i, piece in enumerate(pieces):
                if delay:
                    time.sleep(delay)
                st.block_if_hung()
                if chat:
                    out = ""
                    if i == 0:
                        out += sse(chat_delta({"role": "assistant", "content": None}))
                    out += sse(chat_delta({"content": piece}))
                else:
                    d = {
                        "choices": [
                            {"text": piece, "index": 0, "logprobs": None, "finish_reason": None}
                        ]
                    }
                    d.update(base("text_completion"))
                    out = sse(d)
                self._chunk(out)
            st.block_if_hung()
            if chat:
                finals = []
                if not pieces:  # the real server always sends the role delta first
                    finals.append(chat_delta({"role": "assistant", "content": None}))
                if call:
                    finals.append(chat_delta({"tool_calls": [{"index": 0, **call}]}))
                last = {"choices": [{"finish_reason": finish, "index": 0, "delta": {}}]}
                last.update(base("chat.completion.chunk"))
                finals.append(last)
                if include_usage:
                    u = {"choices": []}
                    u.update(base("chat.completion.chunk"))
                    u["usage"] = usage(n_gen)
                    finals.append(u)
                finals[-1]["timings"] = timings(n_gen)
                out = "".join(sse(f) for f in finals)
            else:
                last = {
                    "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": finish}]
                }
                last.update(base("text_completion"))
                last["usage"] = usage(n_gen)
                last["timings"] = timings(n_gen)
                out = sse(last)
            done(n_gen)
            self._chunk(out + "data: [DONE]\n\n")
            self._end_chunks()
        except ClientGone:
            with st.lock:
                st.cancelled += 1
            self.close_connection = True
            slot("     release", task, "stop processing: client disconnected, task cancelled")

    # ---- the other inference endpoints (shapes of server-task.cpp)

    def _generate(self, body: dict) -> tuple[list[str], str]:
        """The pieces a request generates (tokens knob, max_tokens/n_predict) and why it
        stopped, after sleeping token_delay per piece when not streaming."""
        n = max(0, int(_num(self.st.cfg.get("tokens"), 8)))
        limit = next(
            (
                v
                for v in (body.get(k) for k in ("max_tokens", "n_predict"))
                if isinstance(v, int) and not isinstance(v, bool) and v >= 0
            ),
            None,
        )
        n_gen = n if limit is None else min(n, limit)
        return [_WORDS[i % len(_WORDS)] for i in range(n_gen)], ("length" if n_gen < n else "stop")

    def _delay(self) -> float:
        return max(0.0, _num(self.st.cfg.get("token_delay"), 0.01))

    def _start_sse(self) -> None:
        self.send_response(200)
        self.send_header("X-Accel-Buffering", "no")
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _stream_events(self, events) -> None:
        """Send (event name or None, data) pairs as SSE, one chunk each, as they come."""
        self._start_sse()
        try:
            for name, data in events:
                self.st.block_if_hung()
                line = "data: " + json.dumps(data, separators=(",", ":")) + "\n\n"
                self._chunk((f"event: {name}\n" if name else "") + line)
            self._end_chunks()
        except ClientGone:
            with self.st.lock:
                self.st.cancelled += 1
            self.close_connection = True

    def _paced(self, items):
        delay = self._delay()
        for item in items:
            if delay:
                time.sleep(delay)
            yield item

    def _native(self, infill: bool = False) -> None:
        """/completion, /completions, /infill: llama.cpp's own completion shape."""
        body = self._json_body()
        if body is None:
            return
        if infill:
            for key in ("input_prefix", "input_suffix"):
                if key not in body:
                    self._exception(f'"{key}" is required')
                    return
            prompt = f"{body['input_prefix']}<FIM>{body['input_suffix']}"
        elif "prompt" not in body:
            self._exception('"prompt" must be provided')
            return
        else:
            prompt = body["prompt"]
        n_prompt = _count_tokens(prompt)
        pieces, finish = self._generate(body)
        t0 = time.monotonic()

        def final(content: str) -> dict:
            gen_ms = max((time.monotonic() - t0) * 1000.0, 1e-3)
            return {
                "index": 0,
                "content": content,
                "tokens": [],
                "id_slot": 0,
                "stop": True,
                "model": self.st.model_name,
                "tokens_predicted": len(pieces),
                "tokens_evaluated": n_prompt,
                "prompt": prompt if isinstance(prompt, str) else json.dumps(prompt),
                "stop_type": "limit" if finish == "length" else "eos",
                "stopping_word": "",
                "tokens_cached": n_prompt + len(pieces),
                "timings": {
                    "prompt_n": n_prompt,
                    "predicted_n": len(pieces),
                    "predicted_ms": gen_ms,
                    "predicted_per_second": 1000.0 * len(pieces) / gen_ms,
                },
            }

        if body.get("stream"):
            partial = [
                (None, {"index": 0, "content": p, "tokens": [], "stop": False, "id_slot": 0})
                for p in pieces
            ]

            def events():
                yield from self._paced(partial)
                yield None, final("")  # made when reached: its timings are current

            self._stream_events(events())
            return
        list(self._paced(pieces))
        self._send_json(200, final("".join(pieces)))

    def _infill(self) -> None:
        self._native(infill=True)

    def _messages(self) -> None:
        """/v1/messages: Anthropic's Messages API, as llama-server converts it."""
        body = self._json_body()
        if body is None:
            return
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            # the real conversion throws a runtime_error here, which ex_wrapper makes a 500
            self._send_json(500, _error_body("'messages' is required", "server_error", 500))
            return
        n_prompt = _count_tokens(msgs) + _count_tokens(body.get("system") or "")
        pieces, finish = self._generate(body)
        stop = "max_tokens" if finish == "length" else "end_turn"
        mid = "chatcmpl-" + _rand_id()
        usage = {"cache_read_input_tokens": 0, "input_tokens": n_prompt}
        if not body.get("stream"):
            list(self._paced(pieces))
            self._send_json(
                200,
                {
                    "id": mid,
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "text", "text": "".join(pieces)}],
                    "model": self.st.model_name,
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": {**usage, "output_tokens": len(pieces)},
                },
            )
            return
        start = {
            "type": "message_start",
            "message": {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": self.st.model_name,
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {**usage, "output_tokens": 0},
            },
        }
        block = {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        }
        deltas = [
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": p},
                },
            )
            for p in pieces
        ]
        end = [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": len(pieces)},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        events = [("message_start", start), ("content_block_start", block)]
        self._stream_events(itertools.chain(events, self._paced(deltas), end))

    def _responses(self) -> None:
        """/v1/responses: OpenAI's Responses API, as llama-server converts it."""
        body = self._json_body()
        if body is None:
            return
        inp = body.get("input")
        if inp is None:
            self._exception("'input' is required")
            return
        n_prompt = _count_tokens(inp) + _count_tokens(body.get("instructions") or "")
        pieces, _ = self._generate({**body, "max_tokens": body.get("max_output_tokens")})
        rid, msg_id = "resp_" + _rand_id(), "msg_" + _rand_id()
        text = "".join(pieces)
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
        item = {
            "content": [part],
            "id": msg_id,
            "role": "assistant",
            "status": "completed",
            "type": "message",
        }
        usage = {
            "input_tokens": n_prompt,
            "output_tokens": len(pieces),
            "total_tokens": n_prompt + len(pieces),
            "input_tokens_details": {"cached_tokens": 0},
        }
        now = int(time.time())
        done = {
            "completed_at": now,
            "created_at": now,
            "id": rid,
            "model": self.st.model_name,
            "object": "response",
            "output": [item],
            "status": "completed",
            "usage": usage,
        }
        if not body.get("stream"):
            list(self._paced(pieces))
            self._send_json(200, done)
            return
        progress = {"id": rid, "object": "response", "status": "in_progress"}
        added = {**item, "content": [], "status": "in_progress"}
        head = [
            ("response.created", {"type": "response.created", "response": progress}),
            ("response.in_progress", {"type": "response.in_progress", "response": progress}),
            ("response.output_item.added", {"type": "response.output_item.added", "item": added}),
            (
                "response.content_part.added",
                {
                    "type": "response.content_part.added",
                    "item_id": msg_id,
                    "part": {**part, "text": ""},
                },
            ),
        ]
        deltas = [
            (
                "response.output_text.delta",
                {"type": "response.output_text.delta", "item_id": msg_id, "delta": p},
            )
            for p in pieces
        ]
        end = [
            (
                "response.output_text.done",
                {"type": "response.output_text.done", "item_id": msg_id, "text": text},
            ),
            (
                "response.content_part.done",
                {"type": "response.content_part.done", "item_id": msg_id, "part": part},
            ),
            ("response.output_item.done", {"type": "response.output_item.done", "item": item}),
            ("response.completed", {"type": "response.completed", "response": done}),
        ]
        self._stream_events(itertools.chain(head, self._paced(deltas), end))

    def _input_tokens(self, oai: bool = True) -> None:
        """The token counting endpoints: ``{"input_tokens": N}`` (OpenAI's add an object)."""
        body = self._json_body()
        if body is None:
            return
        prompt = body.get("messages", body.get("input"))
        if prompt is None:
            self._exception("'messages' is required")
            return
        n = _count_tokens(prompt) + _count_tokens(body.get("system") or "")
        self._send_json(
            200, {"input_tokens": n, **({"object": "response.input_tokens"} if oai else {})}
        )

    def _count_tokens_anthropic(self) -> None:
        body = self._json_body()
        if body is not None and not isinstance(body.get("messages"), list):
            # the same Anthropic conversion as /v1/messages: a runtime_error, a 500
            self._send_json(500, _error_body("'messages' is required", "server_error", 500))
            return
        self._input_tokens(oai=False)

    def _rerank(self) -> None:
        st = self.st
        if not st.reranking:
            self._read_body()
            self._error(
                "This server does not support reranking. Start it with `--reranking`",
                "not_supported_error",
                501,
            )
            return
        body = self._json_body()
        if body is None:
            return
        query = body.get("query")
        if not isinstance(query, str):
            self._error('"query" must be provided', "invalid_request_error", 400)
            return
        tei = "texts" in body
        docs = body.get("documents", body.get("texts"))
        if not isinstance(docs, list) or not docs:
            self._error(
                '"documents" must be a non-empty string array', "invalid_request_error", 400
            )
            return
        words = set(query.lower().split())
        label = "score" if tei else "relevance_score"
        ranks = [
            {"index": i, label: round(len(words & set(str(d).lower().split())) - i * 0.01, 4)}
            for i, d in enumerate(docs)
        ]
        ranks.sort(key=lambda r: -r[label])
        top_n = body.get("top_n") if isinstance(body.get("top_n"), int) else len(docs)
        ranks = ranks[:top_n]
        if tei:
            self._send_json(200, ranks)
            return
        n_tok = _count_tokens(query) * len(docs) + _count_tokens(docs)
        self._send_json(
            200,
            {
                "model": body.get("model", st.model_name),
                "object": "list",
                "usage": {"prompt_tokens": n_tok, "total_tokens": n_tok},
                "results": ranks,
            },
        )

    def _tokenize(self) -> None:
        body = self._json_body()
        if body is None:
            return
        content = body.get("content")
        tokens: list = []
        if isinstance(content, str):
            found = self.st.token_ids(content)
            if body.get("add_special"):
                found = [(2, "<bos>"), *found]
            if body.get("with_pieces"):
                tokens = [{"id": t, "piece": p} for t, p in found]
            else:
                tokens = [t for t, _ in found]
        self._send_json(200, {"tokens": tokens})

    def _detokenize(self) -> None:
        body = self._json_body()
        if body is None:
            return
        ids = body.get("tokens") or []
        if not isinstance(ids, list) or not all(isinstance(t, int) for t in ids):
            self._exception("[json.exception.type_error.302] type must be number")
            return
        with self.st.lock:
            content = "".join(self.st.pieces.get(t, "") for t in ids)
        self._send_json(200, {"content": content})

    def _apply_template(self) -> None:
        body = self._json_body()
        if body is None:
            return
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            self._exception("'messages' is required")
            return
        self._send_json(200, {"prompt": _gemma_prompt(msgs)})

    def _transcriptions(self) -> None:
        fields = _form_fields(self.headers.get("Content-Type") or "", self._read_body())
        if "file" not in fields:
            self._exception("No input file found for transcription")
            return
        n = len(fields["file"])
        self._send_json(
            200,
            {
                "type": "transcript.text.done",
                "text": f"fake transcription of {n} bytes",
                "usage": {
                    "type": "tokens",
                    "input_tokens": n // 100 + 1,
                    "output_tokens": 5,
                    "total_tokens": n // 100 + 6,
                },
            },
        )

    def _peer_closed(self) -> bool:
        """Whether the client has closed its end (readable with nothing to read)."""
        import select

        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _embeddings_native(self) -> None:
        self._embeddings(oai=False)

    def _embeddings(self, oai: bool = True) -> None:
        st = self.st
        body = self._json_body()
        if body is None:
            return
        if not st.embeddings:
            self._error(
                "This server does not support embeddings. Start it with `--embeddings`",
                "not_supported_error",
                501,
            )
            return
        inp = body.get("input", body.get("content"))
        if inp is None:
            self._error('"input" or "content" must be provided', "invalid_request_error", 400)
            return
        items = inp if isinstance(inp, list) and inp and not isinstance(inp[0], int) else [inp]
        if not items:
            self._error('"input" must not be empty', "invalid_request_error", 400)
            return
        data = []
        n_tok = 0
        for idx, item in enumerate(items):
            text = item if isinstance(item, str) else json.dumps(item)
            seed = sum(text.encode()) % 97
            vec = [round(((seed + k * 31) % 97) / 97.0 - 0.5, 6) for k in range(8)]
            data.append({"embedding": vec, "index": idx, "object": "embedding"})
            n_tok += _count_tokens(item)
        if not oai:  # llama.cpp's own shape: one pooled vector per input, in a list
            self._send_json(
                200, [{"index": d["index"], "embedding": [d["embedding"]]} for d in data]
            )
            return
        self._send_json(
            200,
            {
                "model": body.get("model", st.model_name),
                "object": "list",
                "usage": {"prompt_tokens": n_tok, "total_tokens": n_tok},
                "data": data,
            },
        )


#: POST path -> Handler method, for the endpoints beyond chat and OpenAI completions.
POSTS = {
    "/completion": "_native",
    "/completions": "_native",
    "/infill": "_infill",
    "/v1/embeddings": "_embeddings",
    "/embeddings": "_embeddings_native",
    "/embedding": "_embeddings_native",
    "/v1/responses": "_responses",
    "/responses": "_responses",
    "/v1/chat/completions/input_tokens": "_input_tokens",
    "/chat/completions/input_tokens": "_input_tokens",
    "/v1/responses/input_tokens": "_input_tokens",
    "/responses/input_tokens": "_input_tokens",
    "/v1/messages": "_messages",
    "/v1/messages/count_tokens": "_count_tokens_anthropic",
    "/rerank": "_rerank",
    "/reranking": "_rerank",
    "/v1/rerank": "_rerank",
    "/v1/reranking": "_rerank",
    "/tokenize": "_tokenize",
    "/detokenize": "_detokenize",
    "/apply-template": "_apply_template",
    "/v1/audio/transcriptions": "_transcriptions",
    "/audio/transcriptions": "_transcriptions",
}


# --------------------------------------------------------------------------- process


def _exit_now(code: int) -> None:
    _flush_all()
    os._exit(code)


def _exit_soon(code: int, message: str, delay: float = 0.05) -> None:
    def run() -> None:
        time.sleep(delay)
        log(message, "E")
        _exit_now(code)

    threading.Thread(target=run, daemon=True).start()


def _cleanup_line() -> None:
    srv("operator()", "operator(): cleaning up before exit...")


def _on_signal(signum: int, frame: object) -> None:
    st = STATE
    if st is not None and st.ignore_sigterm:
        log(f"fake-llama: ignoring signal {signum}", "W")
        return
    _cleanup_line()
    _exit_now(0)


def _bind_error(host: str, port: int) -> None:
    # exactly what the real build prints when the port is taken (then exit 1)
    srv("start", f"couldn't bind HTTP server socket, hostname: {host}, port: {port}", "E")
    _cleanup_line()
    srv("llama_server", "exiting due to HTTP server error", "E")


def _load_failure(model: str, first_error: str) -> None:
    """The real lines for a model that cannot be loaded (here: a missing file)."""
    for _ in range(2):  # the real one tries twice (fit params, then the real load)
        log(first_error, "E")
        log(
            f"llama_model_load: error loading model: llama_model_loader: failed to load model "
            f"from {model}",
            "E",
        )
        log("llama_model_load_from_file_impl: failed to load model", "E")
        if _ == 0:
            log(
                "common_fit_params: encountered an error while trying to fit params to free "
                "device memory: failed to load model",
                "E",
            )
    cmn("common_init_", f"failed to load model '{model}'", "E")
    srv("load_model", f"failed to load model, '{model}'", "E")
    _cleanup_line()
    srv("llama_server", "exiting due to model loading error", "E")


def _print_file(path: Path, stream_name: str) -> None:
    stream = sys.stdout if stream_name == "stdout" else sys.stderr
    try:
        stream.write(path.read_text())
    except OSError:
        stream.write(f"(fake llama-server: {path.name} is missing)\n")
    stream.flush()


def _startup_lines(args: Args) -> None:
    """The first lines the real server prints (before binding)."""
    srv("llama_server", "initializing ...")
    cmn("common_param", "common_params_print_info: verbosity = 3 (adjust with the `-lv N` CLI arg)")
    if not args.api_keys:
        srv(
            "llama_server",
            "security: no API key is set and CORS allows all origins "
            "(see https://github.com/ggml-org/llama.cpp/pull/25655)",
            "W",
        )


def _loader(st: State) -> None:
    cfg = st.cfg
    load = max(0.0, _num(cfg.get("load_seconds"), 0.2))
    model = st.model_path or st.model_name
    srv("load_model", f"loading model '{model}'")
    exit_code = cfg.get("exit_during_load")
    if exit_code is not None and exit_code is not False:
        time.sleep(load / 2)
        _load_failure(model, f"fake-llama: exit_during_load={exit_code}")
        _exit_now(int(_num(exit_code, 1)))
    if st.model_path is not None and not os.path.isfile(st.model_path):
        time.sleep(min(load, 0.01))
        _load_failure(
            model,
            f"gguf_init_from_file: failed to open GGUF file '{model}' (No such file or directory)",
        )
        _exit_now(1)
    time.sleep(load)
    cmn("init", "llama threadpool init, n_threads = 2")
    srv("load_model", "initializing, n_slots = 4, n_ctx_slot = 4096, kv_unified = 'true'")
    hang = _truthy(cfg.get("hang"))
    hang_after = max(0.0, _num(cfg.get("hang_after"), 0.0))
    with st.lock:
        st.loading = False
        st.ready_at = time.time()
        if hang and not hang_after:  # no request may slip through between ready and hung
            st.hung = True
    srv("llama_server", "model loaded")
    host = st.args.host
    shown = f"[{host}]" if ":" in host else host
    srv("llama_server", f"listening on http://{shown}:{st.port}")
    if st.port == 8080:
        srv(
            "llama_server",
            "notice: server default port will be changed to :9931 in a future "
            "release (ref: https://github.com/ggml-org/llama.cpp/pull/26508)",
            "W",
        )
    crash_after = cfg.get("crash_after")
    if crash_after is not None and crash_after is not False:
        code = int(_num(cfg.get("crash_code"), 1))
        _exit_soon(
            code,
            f"fake-llama: crash_after reached, exiting with {code}",
            delay=max(0.0, _num(crash_after, 0.0)),
        )
    if hang:
        if hang_after:
            time.sleep(hang_after)
            st.hang()
        log("fake-llama: hanging: no request will be answered from now on", "W")


def main(argv: list[str] | None = None) -> int:
    global STATE
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.version:
        _print_file(VERSION_TEXT_PATH, VERSION_STREAM)
        return 0
    cfg = load_config(args.model)
    if args.unknown and _truthy(cfg.get("strict_args")):
        sys.stderr.write(f"error: invalid argument: {args.unknown[0]}\n")
        sys.stderr.flush()
        return 1
    if args.help:
        _print_file(HELP_TEXT_PATH, HELP_STREAM)
        return 0

    STATE = st = State(args, cfg)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    _startup_lines(args)
    if args.host.endswith(".sock"):
        log("fake-llama: unix sockets are not supported by the fake", "E")
        return 1
    if _truthy(cfg.get("fail_bind")):
        _bind_error(args.host, args.port)
        return 1
    Server.address_family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    try:
        server = Server((args.host, args.port), Handler)
    except OSError:
        _bind_error(args.host, args.port)
        return 1
    st.port = server.server_address[1]

    threading.Thread(target=_loader, args=(st,), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        _flush_all()
    return 0


if __name__ == "__main__":
    _exit_now(main())
