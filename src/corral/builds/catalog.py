"""The flag catalog of one llama-server build, parsed from the binary's own ``--help``.

Every flag a user passes to an instance goes through this catalog: it validates names
and values, folds short spellings and ``--name=value`` into canonical ``(--long, value)``
pairs, merges preset and user flags, and turns pairs back into an argv.

The format comes from llama.cpp ``common/arg.cpp`` (``common_params_print_usage`` and
``common_arg::to_string``)::

    ----- common params -----                 section header ("\\n\\n" before all but the first)

    -t,    --threads N                      help, column 40, wrapped at 70 characters
                                            (env: LLAMA_ARG_THREADS)
    --mmap, --no-mmap                       names first, then the negated names
    --control-vector-layer-range START END  two value hints: the flag takes two tokens
    -hfd, -hfrd, --hf-repo-draft <user>/<model>[:quant]
                                            names wider than 37 columns push help below

Decisions made here (the map is silent on them):

- ``help`` is the wrapped help joined with single spaces, without the ``(env: ...)``
  line: that is ``env``.
- ``--name=value`` is accepted on input but always emitted as two tokens, because
  llama-server itself does not split on ``=``. ``_`` in long names reads as ``-``, as in
  llama-server.
- A flag with two value hints has ``nargs == 2``; its value is the two tokens joined by
  one space, and ``catalog.to_argv`` splits it again (``FlagCatalog.to_argv`` cannot know).
- Choices come from ``[a|b]``, ``<a|b>`` and ``{a,b}`` hints; ``on/off/auto`` choices
  also take llama.cpp's synonyms (``enabled``, ``true``, ``1``, ...), kept as given.
- ``lookup`` also takes a bare name (``ctx-size``) for the CLI's ``corral flags`` command.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from corral.errors import BinaryError, FlagValueError, UnknownFlag, UsageError

if TYPE_CHECKING:
    import subprocess

# difflib, subprocess and tempfile are imported where they are used: a command that loads
# a cached catalog (`corral fit`, `corral run`) needs none of them (~10 ms of imports).

__all__ = ["Flag", "FlagCatalog", "load_catalog"]

log = logging.getLogger(__name__)

#: Column where llama.cpp starts help text; names wider than HELP_COLUMN - 3 wrap.
HELP_COLUMN = 40
#: Seconds a binary gets to print ``--help`` or ``--version``.
RUN_TIMEOUT = 30.0
#: Bump when parsing changes, so catalogs cached by an older corral are parsed again.
CACHE_FORMAT = 1

_SECTION_RE = re.compile(r"-{3,} (.+?) -{3,}\s*")
_NAME_RE = re.compile(r"--?[A-Za-z0-9][\w-]*")
_NAME_SEP_RE = re.compile(r",\s*(?=-)")
_ENV_RE = re.compile(r"\(env: ([A-Za-z0-9_]+)\)")
_TWO_HINTS_RE = re.compile(r"[A-Z][A-Z0-9_]* [A-Z][A-Z0-9_]*")
_CHOICE_RE = re.compile(r"[\w.+-]+")
_VERSION_RE = re.compile(r"^version:\s*(.+?)\s*$", re.MULTILINE)
# Help phrases that mean "give this flag several times / accumulates"; the names below
# accumulate in llama.cpp (their handlers append) whatever their help says.
_REPEAT_RE = re.compile(
    r"can be (?:repeated|specified multiple times|given multiple times|used multiple times)"
    r"|to (?:load|add|specify) multiple",
    re.IGNORECASE,
)
_REPEATABLE_NAMES = frozenset(
    {
        "--lora",
        "--lora-scaled",
        "--control-vector",
        "--control-vector-scaled",
        "--override-kv",
        "--override-tensor",
        "--override-tensor-draft",
    }
)
_SECTION_NAMES = {
    "common params": "common",
    "sampling params": "sampling",
    "speculative params": "speculative",
    # llama-server's own flags; "example-specific" is llama.cpp's word for the tool.
    "example-specific params": "server",
}
# llama.cpp's is_truthy / is_falsey / is_autoy accept these for on/off/auto values.
_SYNONYMS = {
    "on": ("on", "enabled", "true", "1"),
    "off": ("off", "disabled", "false", "0"),
    "auto": ("auto", "-1"),
}


@dataclass(frozen=True)
class Flag:
    """One llama-server flag as its ``--help`` prints it."""

    names: tuple[str, ...]
    long: str
    takes_value: bool
    value_hint: str | None
    choices: tuple[str, ...] | None
    negations: tuple[str, ...]
    env: str | None
    section: str
    help: str
    default: str | None
    repeatable: bool
    #: Tokens the flag consumes: 0 for a switch, 2 for e.g. ``START END``.
    nargs: int = 1

    @property
    def negation(self) -> str | None:
        """Canonical negated spelling (``--no-mmap``), or None for a flag without one."""
        if not self.negations:
            return None
        return next((n for n in self.negations if n.startswith("--")), self.negations[0])

    def accepts(self, value: str) -> bool:
        """Whether ``value`` is allowed (always, unless the flag lists choices)."""
        if not self.choices:
            return True
        return any(value in _SYNONYMS.get(c, (c,)) for c in self.choices)

    def to_dict(self) -> dict:
        """JSON-ready form (tuples as lists); ``Flag.from_dict`` reverses it."""
        return {
            "names": list(self.names),
            "long": self.long,
            "takes_value": self.takes_value,
            "value_hint": self.value_hint,
            "choices": list(self.choices) if self.choices is not None else None,
            "negations": list(self.negations),
            "env": self.env,
            "section": self.section,
            "help": self.help,
            "default": self.default,
            "repeatable": self.repeatable,
            "nargs": self.nargs,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Flag:
        """Rebuild a flag from ``to_dict`` output."""
        choices = d.get("choices")
        return cls(
            names=tuple(d["names"]),
            long=d["long"],
            takes_value=d["takes_value"],
            value_hint=d.get("value_hint"),
            choices=tuple(choices) if choices is not None else None,
            negations=tuple(d.get("negations", ())),
            env=d.get("env"),
            section=d["section"],
            help=d.get("help", ""),
            default=d.get("default"),
            repeatable=d.get("repeatable", False),
            nargs=d.get("nargs", 1 if d["takes_value"] else 0),
        )


class _class_or_instance:
    """Method callable on the class (``self`` is None) or on an instance."""

    def __init__(self, func: Callable) -> None:
        self.func = func
        functools.update_wrapper(self, func)  # type: ignore[arg-type]

    def __get__(self, obj: Any, owner: type) -> Callable:
        return functools.partial(self.func, obj)


@dataclass
class FlagCatalog:
    """All flags of one llama-server build, with lookup, validation and merging."""

    flags: list[Flag]
    sections: list[str]
    version: str | None = None
    _index: dict[str, Flag] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for flag in self.flags:
            for name in flag.names:
                # A spelling printed twice keeps its first flag, as llama.cpp's own map does not.
                self._index.setdefault(name, flag)

    # -- building ---------------------------------------------------------------------

    @classmethod
    def parse(cls, help_text: str, version: str | None = None) -> FlagCatalog:
        """Parse the text of ``llama-server --help`` into a catalog."""
        flags: list[Flag] = []
        sections: list[str] = []
        for section, spec, help_lines in _entries(help_text):
            if section not in sections:
                sections.append(section)
            flags.append(_build_flag(spec, help_lines, section))
        return cls(flags=flags, sections=sections, version=version)

    def to_dict(self) -> dict:
        """JSON-ready form for caching and the API."""
        return {
            "version": self.version,
            "sections": list(self.sections),
            "flags": [f.to_dict() for f in self.flags],
        }

    @classmethod
    def from_dict(cls, d: dict) -> FlagCatalog:
        """Rebuild a catalog from ``to_dict`` output."""
        flags = [Flag.from_dict(f) for f in d["flags"]]
        return cls(flags=flags, sections=list(d["sections"]), version=d.get("version"))

    # -- queries ----------------------------------------------------------------------

    def lookup(self, name: str) -> Flag | None:
        """The flag printed with this spelling (short, long, alias or negation), or None."""
        name = _spelling(name)
        flag = self._index.get(name)
        if flag is None and name and not name.startswith("-"):
            flag = self._index.get("--" + name) or self._index.get("-" + name)
        return flag

    def search(self, text: str) -> list[Flag]:
        """Flags whose names, env var or help contain ``text`` (case-insensitive).

        Flags matching by name come first, each group in catalog order.
        """
        needle = text.lower()
        by_name = [f for f in self.flags if any(needle in n.lower() for n in f.names)]
        by_text = [
            f
            for f in self.flags
            if f not in by_name and (needle in f.help.lower() or needle in (f.env or "").lower())
        ]
        return by_name + by_text

    def suggest(self, name: str, n: int = 3) -> list[str]:
        """Up to ``n`` printed spellings closest to ``name``, best first."""
        import difflib

        return difflib.get_close_matches(_spelling(name), list(self._index), n=n, cutoff=0.6)

    def canonical(self, name: str) -> str:
        """The canonical spelling for ``name``: the long name, or the long negation.

        Raises UnknownFlag (with a suggestion) for a name the build does not know.
        """
        flag = self._require(name)
        return flag.negation if _spelling(name) in flag.negations else flag.long

    # -- argv handling ----------------------------------------------------------------

    def normalize(self, args: Iterable[str]) -> list[tuple[str, str | None]]:
        """Turn argv tokens into ``[(canonical_long_name, value_or_None)]``.

        ``-c 4096``, ``--ctx-size 4096`` and ``--ctx-size=4096`` all give
        ``("--ctx-size", "4096")``; a negation stays itself: ``("--no-mmap", None)``.
        A valued flag always takes the next token, even one starting with ``-``.
        Raises UnknownFlag, FlagValueError or UsageError (all UsageError).
        """
        tokens = list(args)
        out: list[tuple[str, str | None]] = []
        i = 0
        prev_switch: str | None = None
        for token in tokens:
            # A NUL cannot cross execve (Popen raises ValueError): refuse it here, before
            # anything is recorded, rather than at spawn.
            if not isinstance(token, str) or "\0" in token:
                raise FlagValueError(
                    f"flag arguments must be text without NUL bytes, got {str(token)[:40]!r}"
                )
        while i < len(tokens):
            token = tokens[i]
            if not _is_flag_token(token):
                raise _stray(token, prev_switch)
            name, eq, inline = token.partition("=")
            flag = self._require(name)
            if not flag.takes_value:
                if eq:
                    raise FlagValueError(f"{name} is a switch and takes no value (got '{token}')")
                out.append((self.canonical(name), None))
                prev_switch, i = name, i + 1
                continue
            values = [inline] if eq else []
            i += 1
            while len(values) < flag.nargs:
                if i >= len(tokens):
                    raise FlagValueError(f"{name} needs a value ({flag.value_hint})")
                values.append(tokens[i])
                i += 1
            out.append((flag.long, self._checked(flag, name, " ".join(values))))
            prev_switch = None
        return out

    def merge(self, *lists: Iterable[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
        """Merge normalised lists, e.g. build defaults, then a preset, then the user's flags.

        For the same flag the later value wins but keeps the place where the flag was
        first seen; ``--no-X`` and ``--X`` replace each other. Repeatable flags
        (``--lora``...) accumulate, dropping exact duplicates. Names unknown to this
        catalog are kept, keyed by their own spelling.
        """
        merged: dict[str, list[tuple[str, str | None]]] = {}
        for pairs in lists:
            for name, value in pairs:
                flag = self.lookup(name)
                key = flag.long if flag else name
                pair = (self.canonical(name) if flag else name, value)
                if flag is not None and flag.repeatable:
                    kept = merged.setdefault(key, [])
                    if pair not in kept:
                        kept.append(pair)
                else:
                    merged[key] = [pair]  # an existing key keeps its position
        return [pair for pairs in merged.values() for pair in pairs]

    @_class_or_instance
    def to_argv(self: FlagCatalog | None, pairs: Iterable[tuple[str, str | None]]) -> list[str]:
        """Turn pairs back into argv tokens: ``["--ctx-size", "4096", "--no-mmap"]``.

        Callable as ``FlagCatalog.to_argv(pairs)``; call it on a catalog to also split the
        joined value of a two-valued flag back into its tokens.
        """
        argv: list[str] = []
        for name, value in pairs:
            argv.append(name)
            if value is None:
                continue
            flag = self.lookup(name) if self is not None else None
            if flag is not None and flag.nargs > 1:
                argv.extend(value.split(" ", flag.nargs - 1))
            else:
                argv.append(value)
        return argv

    # -- helpers ----------------------------------------------------------------------

    def _require(self, name: str) -> Flag:
        flag = self.lookup(name) if name.startswith("-") else None
        if flag is None:
            hint = self.suggest(name, n=1)
            tail = f" (did you mean {hint[0]}?)" if hint else ""
            raise UnknownFlag(f"unknown flag '{name}'{tail}")
        return flag

    @staticmethod
    def _checked(flag: Flag, name: str, value: str) -> str:
        if not flag.accepts(value):
            allowed = ", ".join(flag.choices or ())
            raise FlagValueError(f"invalid value '{value}' for {name} (choose from {allowed})")
        return value


# -- parsing helpers ------------------------------------------------------------------


def _entries(help_text: str) -> Iterable[tuple[str, str, list[str]]]:
    """Yield ``(section, names-and-hint column, help lines)`` per flag in the text."""
    section = "common"  # flags printed before any header (none today) count as common
    current: tuple[str, str, list[str]] | None = None
    for line in help_text.splitlines():
        header = _SECTION_RE.fullmatch(line)
        starts_flag = not header and line.startswith("-") and _NAME_RE.match(line)
        if current and (header or starts_flag or (line.strip() and not line[0].isspace())):
            yield current  # a header, a new flag or stray text at column 0 ends the entry
            current = None
        if header:
            section = _section_name(header.group(1))
        elif starts_flag:
            spec, first_help = _split_columns(line)
            current = (section, spec, [first_help] if first_help else [])
        elif current:
            current[2].append(line.strip())
    if current:
        yield current


def _split_columns(line: str) -> tuple[str, str]:
    """Split a flag line into its names column and the first line of help (maybe '')."""
    # Names fit in HELP_COLUMN - 3 characters, else llama.cpp moves the help to the next line.
    if len(line) > HELP_COLUMN and line[HELP_COLUMN - 3 : HELP_COLUMN].isspace():
        return line[:HELP_COLUMN].rstrip(), line[HELP_COLUMN:].strip()
    return line.rstrip(), ""


def _section_name(header: str) -> str:
    header = header.strip().lower()
    return _SECTION_NAMES.get(header) or header.removesuffix(" params").replace(" ", "-")


def _build_flag(spec: str, help_lines: list[str], section: str) -> Flag:
    names, hint = _split_names(spec)
    env = None
    kept = []
    for line in help_lines:
        m = _ENV_RE.fullmatch(line)
        if m:
            env = m.group(1)
        elif line:
            kept.append(line)
    help_text = " ".join(kept)
    positive, negations = _split_negations(names) if hint is None else (names, ())
    long = next((n for n in positive if n.startswith("--")), positive[0])
    nargs = 0 if hint is None else 2 if _TWO_HINTS_RE.fullmatch(hint) else 1
    return Flag(
        names=names,
        long=long,
        takes_value=hint is not None,
        value_hint=hint,
        choices=_choices(hint),
        negations=negations,
        env=env,
        section=section,
        help=help_text,
        default=_default(help_text),
        repeatable=hint is not None and _is_repeatable(names, help_text),
        nargs=nargs,
    )


def _split_names(spec: str) -> tuple[tuple[str, ...], str | None]:
    """``"-c,    --ctx-size N"`` -> ``(("-c", "--ctx-size"), "N")``."""
    names: list[str] = []
    rest = spec.strip()
    while True:
        m = _NAME_RE.match(rest)
        if not m:
            break
        names.append(m.group())
        rest = rest[m.end() :]
        sep = _NAME_SEP_RE.match(rest)
        if not sep:
            break
        rest = rest[sep.end() :]
    return tuple(names), rest.strip() or None


def _looks_negated(name: str) -> bool:
    return name.startswith(("--no-", "-no"))


def _split_negations(names: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split a switch's names into positive spellings and negations.

    llama.cpp prints ``args`` then ``args_neg`` (``-kvo, --kv-offload, -nkvo,
    --no-kv-offload``) without a marker, so the negations start after the last positive
    long name; a flag whose own name is ``--no-...`` (``--no-warmup``) has none.
    """
    if not any(n.startswith("--no-") for n in names):
        return names, ()
    positive_longs = [
        i for i, n in enumerate(names) if n.startswith("--") and not _looks_negated(n)
    ]
    if positive_longs:
        split = positive_longs[-1] + 1
    elif not _looks_negated(names[0]):
        split = next(i for i, n in enumerate(names) if _looks_negated(n))
    else:
        return names, ()
    return names[:split], names[split:]


def _choices(hint: str | None) -> tuple[str, ...] | None:
    """``[on|off|auto]``, ``<0|1>``, ``{none,linear,yarn}`` -> the listed values."""
    if not hint or len(hint) < 3 or hint[0] + hint[-1] not in ("[]", "<>", "{}"):
        return None
    inner = hint[1:-1]
    if "|" in inner:
        items = inner.split("|")
    elif hint[0] == "{" and "," in inner:
        items = inner.split(",")
    else:
        return None
    items = [item.strip() for item in items]
    if not all(_CHOICE_RE.fullmatch(item) for item in items):
        return None  # a pattern such as "[<repo>/]<model>", not a list of values
    return tuple(items)


def _default(help_text: str) -> str | None:
    """The text after ``default:`` up to its closing parenthesis, unquoted."""
    start = help_text.find("default: ")
    if start < 0:
        return None
    depth = 0
    chars = []
    for ch in help_text[start + len("default: ") :]:
        depth += ch == "("
        if ch == ")":
            if depth == 0:
                break
            depth -= 1
        chars.append(ch)
    value = "".join(chars).strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return value or None


def _is_repeatable(names: tuple[str, ...], help_text: str) -> bool:
    return not _REPEATABLE_NAMES.isdisjoint(names) or bool(_REPEAT_RE.search(help_text))


# -- argv helpers ---------------------------------------------------------------------


def _spelling(name: str) -> str:
    # llama-server reads "_" as "-" in long names (--ctx_size), so the catalog does too.
    return name.replace("_", "-") if name.startswith("--") else name


def _is_flag_token(token: str) -> bool:
    return len(token) > 1 and token.startswith("-")


def _stray(token: str, prev_switch: str | None) -> UsageError:
    if prev_switch is not None:
        return FlagValueError(f"{prev_switch} is a switch and takes no value (got '{token}')")
    return UsageError(f"unexpected argument '{token}': llama-server flags start with '-'")


# -- loading from a binary ------------------------------------------------------------


def load_catalog(binary: Path, cache_dir: Path) -> FlagCatalog:
    """The flag catalog of ``binary``, from ``cache_dir`` or by running it.

    The cache is keyed by the resolved path, size and mtime of the binary, so a rebuilt
    or replaced binary is parsed again; on a hit the binary is not run.
    Raises BinaryError when the binary is missing, does not run, or prints no flags.
    """
    try:
        resolved = Path(binary).resolve(strict=True)
        st = resolved.stat()
    except OSError as exc:
        raise BinaryError(f"llama-server not found at {binary}: {exc.strerror}") from exc
    key = _cache_key(resolved, st)
    cache_file = Path(cache_dir) / f"flags-{key}.json"
    catalog = _read_cache(cache_file, key)
    if catalog is None:
        catalog = _catalog_from_binary(resolved)
        _write_cache(cache_file, key, catalog)
    return catalog


def _cache_key(resolved: Path, st: os.stat_result) -> str:
    raw = f"{CACHE_FORMAT}\0{resolved}\0{st.st_size}\0{st.st_mtime_ns}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def _read_cache(path: Path, key: str) -> FlagCatalog | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("key") != key:
            return None
        return FlagCatalog.from_dict(data["catalog"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # A damaged cache costs one more run of the binary, not an error.
        log.warning("ignoring unreadable flag cache %s: %s", path, exc)
        return None


def _write_cache(path: Path, key: str, catalog: FlagCatalog) -> None:
    import tempfile

    payload = json.dumps({"key": key, "catalog": catalog.to_dict()})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".flags-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(payload)
        os.replace(tmp, path)  # readers never see a half-written file
    except OSError as exc:
        # The catalog is still good; only the next load pays for parsing again.
        log.warning("could not cache flag catalog at %s: %s", path, exc)


def _catalog_from_binary(binary: Path) -> FlagCatalog:
    help_run = _run(binary, "--help")
    catalog = FlagCatalog.parse(help_run.stdout)
    if not catalog.flags:
        why = _last_line(help_run.stderr) or f"exit status {help_run.returncode}"
        raise BinaryError(f"{binary} --help printed no flags ({why})")
    catalog.version = _version(binary)
    return catalog


def _version(binary: Path) -> str | None:
    """``"4567 (abc1234)"`` from ``version: 4567 (abc1234)`` (printed on stderr), or None."""
    try:
        run = _run(binary, "--version")
    except BinaryError:
        return None  # the help parsed; a missing version is not worth failing for
    m = _VERSION_RE.search(run.stdout + "\n" + run.stderr)
    return m.group(1) if m else None


def _run(binary: Path, arg: str) -> subprocess.CompletedProcess[str]:
    import subprocess

    env = dict(os.environ)
    # Builds ship their libllama/libggml .so files beside the binary.
    libs = [str(binary.parent)] + [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
    env["LD_LIBRARY_PATH"] = ":".join(libs)
    try:
        return subprocess.run(
            [str(binary), arg],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=RUN_TIMEOUT,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BinaryError(f"{binary} {arg} did not finish within {RUN_TIMEOUT:g} s") from exc
    except OSError as exc:
        raise BinaryError(f"cannot run {binary}: {exc.strerror or exc}") from exc


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
