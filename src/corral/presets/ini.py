"""llama.cpp's own preset file: the INI of ``llama-server --models-preset FILE``.

Router mode reads it (``common/preset.cpp``): ``[NAME]`` sections, ``[*]`` for the
global section, ``key = value`` where a key is a flag spelling without dashes (``c``,
``ctx-size``) or its env var (``LLAMA_ARG_CTX_SIZE``), switches take ``true``/``false``,
``;``/``#`` start a comment (values can therefore hold neither).

Decisions where the issue is silent:

- INI ``model`` maps to the preset's model and ``alias`` (comma separated) to its aliases:
  in llama.cpp's router both name what requests may ask for, as corral's aliases do.
  ``version`` is skipped as llama.cpp does; keys before the first section belong to a
  preset named ``default`` (llama.cpp does the same). ``port`` is dropped (corral assigns
  ports), and the router-only keys ``load-on-startup``, ``stop-timeout`` and
  ``dedup-cache-models`` have no corral meaning: dropped, with a warning.
- Export writes each flag under llama.cpp's key (its last printed spelling, as
  ``common_preset::to_ini`` does), switches as ``true``/``false``, repeated values of a
  repeatable flag joined with ``,`` (how llama.cpp takes several ``--lora``...). What INI
  cannot hold (env, restart, idle_ttl, pinned, build, description, two-valued flags,
  values containing ``;`` or ``#``) is left out with a warning.
- A section name that is not a corral preset name (``[org/repo:Q4_K_M]``) is imported
  under a cleaned name, with the original kept as an alias.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable

from corral.builds.catalog import Flag, FlagCatalog
from corral.errors import UsageError
from corral.presets.model import (
    ALIAS_RE,
    DEFAULTS,
    Preset,
    is_flag,
    normalized,
    unset,
    validate,
)
from corral.types import NAME_RE, name_from

_BLANK_RE = re.compile(r"[ \t]*")
_COMMENT_RE = re.compile(r"^[ \t]*[;#]")
_SECTION_RE = re.compile(r"[ \t]*\[[ \t]*([^\]]+?)[ \t]*\][ \t]*(?:[;#].*)?")
_KV_RE = re.compile(r"[ \t]*([A-Za-z_][A-Za-z0-9_.-]*)[ \t]*=[ \t]*([^;#]*?)[ \t]*(?:[;#].*)?")
_TRUTHY = ("on", "enabled", "true", "1")
_FALSEY = ("off", "disabled", "false", "0")
#: Router options llama.cpp reads from preset files only (``common_params_add_preset_options``).
_ROUTER_ONLY = ("load-on-startup", "stop-timeout", "dedup-cache-models")
#: Keys before any section go to this preset, as in llama.cpp (COMMON_PRESET_DEFAULT_NAME).
_INI_DEFAULT_SECTION = "default"
_CORRAL_ONLY = ("env", "restart", "idle_ttl", "pinned", "build", "description")


def from_ini(text: str, catalog: FlagCatalog) -> tuple[list[Preset], list[str]]:
    """Presets from a llama.cpp ``--models-preset`` INI file, and warnings.

    ``catalog`` tells flags from switches and maps every key spelling to its flag.
    A malformed line or an unknown key is a UsageError naming the line.
    """
    sections = _ini_sections(text)
    warnings: list[str] = []
    env_index = {f.env: f for f in catalog.flags if f.env}
    presets = []
    used: dict[str, int] = {}
    for section, (header_line, items) in sections.items():
        name = _ini_name(section, header_line)
        if name in used:
            raise UsageError(
                f"INI line {header_line}: section [{section}] would become preset "
                f"{name!r}, like the section on line {used[name]}"
            )
        used[name] = header_line
        preset = Preset(name=name)
        if name != section:
            keep = bool(ALIAS_RE.fullmatch(section))
            preset.aliases = [section] if keep else []
            warnings.append(
                f"[{section}] imported as preset {name!r}"
                + (f" answering to {section!r}" if keep else "")
            )
        chosen: dict[str, tuple[Flag, list[str]]] = {}
        for lineno, key, value in items:
            where = f"INI line {lineno}: [{section}] {key}"
            _ini_item(catalog, env_index, preset, chosen, where, key, value, warnings)
        preset.flags = [tok for _, tokens in chosen.values() for tok in tokens]
        presets.append(validate(preset, catalog))
    return presets, warnings


def _ini_sections(text: str) -> dict[str, tuple[int, list[tuple[int, str, str]]]]:
    """``{section: (header line, [(line, key, value)])}`` in file order."""
    sections: dict[str, tuple[int, list]] = {}
    current = None
    for lineno, line in enumerate(re.split(r"\r\n|\n|\r", text), start=1):
        if _BLANK_RE.fullmatch(line) or _COMMENT_RE.match(line):
            continue
        header = _SECTION_RE.fullmatch(line)
        if header:
            current = header.group(1)
            if current in sections:
                raise UsageError(
                    f"INI line {lineno}: section [{current}] appears twice "
                    f"(first on line {sections[current][0]})"
                )
            sections[current] = (lineno, [])
            continue
        kv = _KV_RE.fullmatch(line)
        if not kv:
            raise UsageError(
                f"INI line {lineno}: expected [section], key = value or a "
                f"comment, got {line.strip()[:60]!r}"
            )
        if kv.group(1) == "version":
            continue  # reserved by llama.cpp, skipped there too
        if current is None:
            current = _INI_DEFAULT_SECTION
            sections.setdefault(current, (lineno, []))
        sections[current][1].append((lineno, kv.group(1), kv.group(2)))
    return sections


def _ini_name(section: str, lineno: int) -> str:
    """The corral name for a section: itself when valid, else a cleaned-up spelling."""
    if section == DEFAULTS or NAME_RE.fullmatch(section):
        return section
    clean = name_from(section, "")
    if not clean:
        raise UsageError(f"INI line {lineno}: section [{section}] gives no usable preset name")
    return clean


def _ini_item(
    catalog: FlagCatalog,
    env_index: dict[str, Flag],
    preset: Preset,
    chosen: dict,
    where: str,
    key: str,
    value: str,
    warnings: list[str],
) -> None:
    """Apply one ``key = value`` of a section to ``preset`` (flags collect in ``chosen``)."""
    if key in _ROUTER_ONLY:
        warnings.append(f"{where}: a llama.cpp router option with no corral equivalent; ignored")
        return
    flag = env_index.get(key) or (catalog.lookup(key) if not key.startswith("-") else None)
    if flag is None:
        hint = catalog.suggest("--" + key, n=1)
        tail = f" (did you mean {hint[0].lstrip('-')}?)" if hint else ""
        raise UsageError(f"{where}: not a flag of this llama-server{tail}")
    if is_flag(catalog, flag.long, "--model"):
        preset.model = value
        return
    if is_flag(catalog, flag.long, "--alias"):
        preset.aliases += [a.strip() for a in value.split(",") if a.strip()]
        return
    if is_flag(catalog, flag.long, "--port"):
        warnings.append(f"{where}: corral assigns ports itself; ignored")
        return
    tokens = _ini_tokens(flag, key, value, where)
    if flag.long in chosen:
        warnings.append(f"{where}: flag given twice in the section; the later value wins")
    chosen[flag.long] = (flag, tokens)


def _ini_tokens(flag: Flag, key: str, value: str, where: str) -> list[str]:
    if flag.nargs > 1:
        raise UsageError(f"{where}: takes two values, which llama.cpp presets cannot hold")
    if flag.takes_value:
        return [flag.long, value]
    word = value.lower()
    if word not in _TRUTHY + _FALSEY:
        raise UsageError(f"{where}: a switch takes true or false, got {value!r}")
    negated = ("--" + key) in flag.negations or ("-" + key) in flag.negations
    on = (word in _TRUTHY) != negated
    if on:
        return [flag.long]
    return [flag.negation] if flag.negation else []  # llama.cpp drops a false switch


def to_ini(
    presets: Iterable[Preset],
    catalog: FlagCatalog,
    model_path: Callable[[str], str | None] | None = None,
) -> tuple[str, list[str]]:
    """A llama.cpp ``--models-preset`` file for ``presets``, and warnings for what INI
    cannot hold. ``model_path(ref)`` turns a model of the index into its file path, since
    llama-server needs a path."""
    warnings: list[str] = []
    blocks = ["; llama-server --models-preset file, written by corral\n"]
    for p in presets:
        lines = [f"[{p.name}]"]
        if p.model:
            lines.append(
                _ini_line(
                    p.name, "model", (model_path and model_path(p.model)) or p.model, warnings
                )
            )
        if p.aliases:
            lines.append(_ini_line(p.name, "alias", ",".join(p.aliases), warnings))
        lines += _ini_flag_lines(catalog, p, warnings)
        dropped = [k for k in _CORRAL_ONLY if not unset(getattr(p, k))]
        if dropped:
            warnings.append(
                f"preset {p.name!r}: {', '.join(dropped)} cannot be written to INI; left out"
            )
        blocks.append("\n".join(line for line in lines if line is not None) + "\n")
    return "\n".join(blocks), warnings


def _ini_flag_lines(catalog: FlagCatalog, preset: Preset, warnings: list[str]) -> list:
    """``key = value`` lines for the preset's flags, merged (one line per flag)."""
    grouped: dict[str, tuple[Flag, list]] = {}
    for flag_name, value in catalog.merge(normalized(catalog, preset)):
        flag = catalog.lookup(flag_name)
        grouped.setdefault(flag.long, (flag, []))[1].append((flag_name, value))
    lines = []
    for flag, items in grouped.values():
        if flag.nargs > 1:
            warnings.append(
                f"preset {preset.name!r}: {flag.long} takes two values, which "
                f"llama.cpp presets cannot hold; left out"
            )
        elif not flag.takes_value:
            on = items[-1][0] not in flag.negations
            lines.append(f"{_ini_key(flag)} = {'true' if on else 'false'}")
        else:
            value = ",".join(v for _, v in items)  # llama.cpp takes --lora a,b and the like
            lines.append(_ini_line(preset.name, _ini_key(flag), value, warnings))
    return lines


def _ini_key(flag: Flag) -> str:
    """llama.cpp's key for a flag: its last positive spelling without dashes."""
    positive = [n for n in flag.names if n not in flag.negations]
    return positive[-1].lstrip("-")


def _ini_line(name: str, key: str, value: str, warnings: list[str]) -> str | None:
    """``key = value``, or None (and a warning) when llama.cpp would cut the value short."""
    bad = set(";#\r\n") & set(value)
    if bad:
        warnings.append(
            f"preset {name!r}: {key} = {value!r} holds {''.join(sorted(bad))!r}, "
            f"which an INI value cannot hold; left out"
        )
        return None
    return f"{key} = {value}"
