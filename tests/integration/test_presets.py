"""Presets end to end: the real daemon, the real CLI, fake llama-servers it launches."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.integration.conftest import api, assert_error, fake_processes, get, launch

#: argv = [binary, --model, M, --host, H, --port, P, <flags...>]
OWNED = 9  # binary, --model, --host, --port and the --alias corral gives the instance


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def failed(proc: subprocess.CompletedProcess, code: int) -> str:
    """The one error line of a failed command with exit status ``code``."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_run_with_a_preset_merges_flags_and_env(daemon, model_file):
    proc = ok(
        daemon.cli(
            "preset",
            "save",
            "chat",
            "--model",
            str(model_file),
            "-c",
            "4096",
            "-ngl",
            "3",
            "--env",
            "CUDA_VISIBLE_DEVICES=7",
            "--alias",
            "talk",
            "--restart",
            "always",
            "--description",
            "small chat",
        )
    )
    assert proc.stdout.strip() == "saved preset chat"
    proc = ok(daemon.cli("run", "--preset", "chat", "-c", "2048", "--env", "EXTRA_MARK=x"))
    assert proc.stdout.startswith("chat  ready  port ")
    inst = get(daemon, "chat")
    assert inst["argv"][OWNED:] == ["--ctx-size", "2048", "--gpu-layers", "3"]
    assert inst["argv"][1:3] == ["--model", str(model_file.resolve())]
    assert (inst["preset"], inst["aliases"], inst["restart_policy"]) == ("chat", ["talk"], "always")
    assert inst["env"] == {"CUDA_VISIBLE_DEVICES": "7", "EXTRA_MARK": "x"}
    environ = environ_of(inst["pid"])
    assert environ["CUDA_VISIBLE_DEVICES"] == "7" and environ["EXTRA_MARK"] == "x"
    # corral's options after MODEL too; the instance name comes from the preset, then -2
    ok(
        daemon.cli(
            "run",
            "--env",
            "SECOND=2",
            str(model_file),
            "--preset",
            "chat",
            "--pin",
            "--idle-ttl",
            "0",
            "--no-warmup",
        )
    )
    second = get(daemon, "chat-2")
    assert second["argv"][OWNED:] == ["--ctx-size", "4096", "--gpu-layers", "3", "--no-warmup"]
    assert (second["pinned"], second["idle_ttl"]) == (True, 0)
    assert second["env"] == {"CUDA_VISIBLE_DEVICES": "7", "SECOND": "2"}


def test_defaults_apply_to_every_launch(daemon, model_file):
    ok(daemon.cli("preset", "save", "*", "-c", "1024", "--jinja", "--env", "FROM_DEFAULTS=1"))
    ok(daemon.cli("run", str(model_file), "--name", "plain", "-ngl", "2", "--no-jinja"))
    inst = get(daemon, "plain")
    assert inst["argv"][OWNED:] == ["--ctx-size", "1024", "--no-jinja", "--gpu-layers", "2"]
    assert environ_of(inst["pid"])["FROM_DEFAULTS"] == "1"
    assert inst["preset"] is None
    # the API launch route composes the same way
    api_inst = launch(daemon, model_file, name="viaapi", flags=["-c", "512"])
    assert api_inst["argv"][OWNED:] == ["--ctx-size", "512", "--jinja"]
    assert api_inst["env"] == {"FROM_DEFAULTS": "1"}


def test_preset_api(daemon, model_file, fake_binary):
    body = {
        "model": str(model_file),
        "flags": ["-c", "8192"],
        "aliases": ["big"],
        "env": {"CUDA_VISIBLE_DEVICES": "0"},
        "idle_ttl": 600,
        "restart": "never",
    }
    status, answer = api(daemon, "PUT", "/api/v1/presets/p1", body)
    assert (status, answer["created"], answer["warnings"]) == (201, True, [])
    assert answer["preset"] == {
        "name": "p1",
        "model": str(model_file),
        "build": None,
        "flags": ["-c", "8192"],
        "env": {"CUDA_VISIBLE_DEVICES": "0"},
        "restart": "never",
        "idle_ttl": 600.0,
        "aliases": ["big"],
        "pinned": False,
        "description": "",
    }
    status, answer = api(daemon, "PUT", "/api/v1/presets/p1", {**body, "pinned": True})
    assert (status, answer["created"], answer["preset"]["pinned"]) == (200, False, True)
    assert api(daemon, "GET", "/api/v1/presets/p1")[1]["pinned"] is True
    assert api(daemon, "PUT", "/api/v1/presets/*", {"flags": ["-t", "2"]})[0] == 201
    assert [p["name"] for p in api(daemon, "GET", "/api/v1/presets")[1]] == ["*", "p1"]
    status, export = api(daemon, "GET", "/api/v1/presets/p1/export?format=ini")
    assert status == 200 and "[p1]\n" in export["text"] and "ctx-size = 8192\n" in export["text"]
    assert export["warnings"] == [
        "preset 'p1': env, restart, idle_ttl, pinned cannot be written to INI; left out"
    ]
    assert api(daemon, "DELETE", "/api/v1/presets/p1") == (200, {"removed": "p1"})
    assert_error(*api(daemon, "GET", "/api/v1/presets/p1"), 404, "not_found")
    assert_error(*api(daemon, "DELETE", "/api/v1/presets/p1"), 404, "not_found")
    assert fake_processes(fake_binary) == []


def test_preset_bad_input_is_4xx_never_500(daemon, model_file, fake_binary):
    put = "/api/v1/presets/"
    err = assert_error(
        *api(daemon, "PUT", put + "x", {"flags": ["--ctx-sise", "1"]}), 400, "unknown_flag"
    )
    assert "did you mean --ctx-size?" in err["message"]
    assert_error(*api(daemon, "PUT", put + "x", {"flags": ["--port", "1"]}), 400, "owned_flag")
    assert_error(*api(daemon, "PUT", put + "bad.name!", {}), 400)
    assert_error(*api(daemon, "PUT", put + "*", {"model": "m.gguf"}), 400)
    assert_error(*api(daemon, "PUT", put + "x", {"build": 99}), 400)
    for patch in (
        {"flags": "-c 1"},
        {"env": {"A": 1}},
        {"env": {"1A": "x"}},
        {"idle_ttl": -1},
        {"restart": "sometimes"},
        {"aliases": ["a"] * 33},
        {"pinned": "maybe"},
        {"description": "d" * 1025},
        {"model": ""},
        {"aliases": ["a b"]},
    ):
        assert_error(*api(daemon, "PUT", put + "x", patch), 400)
    assert api(daemon, "PUT", put + "a", {"aliases": ["shared"]})[0] == 201
    assert_error(*api(daemon, "PUT", put + "b", {"aliases": ["shared"]}), 409, "conflict")
    assert_error(*api(daemon, "PUT", put + "shared", {}), 409, "conflict")
    # imports: malformed text names the line; all or nothing
    err = assert_error(
        *api(
            daemon,
            "POST",
            "/api/v1/presets/import",
            {"format": "ini", "text": "[ok]\nc = 1\n[bad]\nnope = 1\n"},
        ),
        400,
    )
    assert err["message"].startswith("INI line 4: [bad] nope")
    err = assert_error(
        *api(
            daemon, "POST", "/api/v1/presets/import", {"format": "yaml", "text": "presets: {x: [1"}
        ),
        400,
    )
    assert err["message"].startswith("YAML line 1")
    assert_error(
        *api(daemon, "POST", "/api/v1/presets/import", {"format": "toml", "text": ""}), 400
    )
    assert [p["name"] for p in api(daemon, "GET", "/api/v1/presets")[1]] == ["a"]
    # launching from presets
    api(daemon, "PUT", put + "nomodel", {"flags": ["-c", "1"]})
    err = assert_error(*api(daemon, "POST", "/api/v1/instances", {"preset": "nomodel"}), 400)
    assert err["message"] == "preset 'nomodel' names no model: give MODEL"
    assert_error(
        *api(daemon, "POST", "/api/v1/instances", {"preset": "ghost", "model": str(model_file)}),
        404,
        "not_found",
    )
    assert_error(
        *api(
            daemon,
            "POST",
            "/api/v1/instances",
            {"model": str(model_file), "env": {"BAD-NAME": "1"}},
        ),
        400,
    )
    assert_error(
        *api(daemon, "POST", "/api/v1/instances", {"model": str(model_file), "aliases": ["a b"]}),
        400,
    )
    assert fake_processes(fake_binary) == []


def test_export_import_through_the_cli(daemon, model_file, tmp_path):
    ok(daemon.cli("preset", "save", "*", "-fa", "on"))
    ok(
        daemon.cli(
            "preset",
            "save",
            "chat",
            "--model",
            str(model_file),
            "-c",
            "4096",
            "--no-jinja",
            "--lora",
            "a.gguf",
            "--lora",
            "b.gguf",
            "--alias",
            "talk",
            "--env",
            "CUDA_VISIBLE_DEVICES=0",
            "--idle-ttl",
            "300",
            "--pin",
        )
    )
    ok(daemon.cli("preset", "save", "raw", "-c", "1", "--", "--alias", "served-as"))
    before = json.loads(ok(daemon.cli("preset", "ls", "--json")).stdout)
    assert before[2]["flags"] == ["-c", "1", "--alias", "served-as"]
    shown = yaml.safe_load(ok(daemon.cli("preset", "show", "chat")).stdout)
    assert shown["presets"]["chat"]["aliases"] == ["talk"]
    listing = ok(daemon.cli("preset", "ls")).stdout
    assert listing.splitlines()[0].split() == ["NAME", "MODEL", "FLAGS", "ALIASES", "DESCRIPTION"]

    yaml_file = tmp_path / "presets.yaml"
    ok(daemon.cli("preset", "export", "-o", str(yaml_file)))
    ok(daemon.cli("preset", "rm", "*", "chat", "raw"))
    assert json.loads(ok(daemon.cli("preset", "ls", "--json")).stdout) == []
    proc = ok(daemon.cli("preset", "import", str(yaml_file)))
    assert proc.stdout.strip() == "imported 3 preset(s): *, chat, raw"
    assert json.loads(ok(daemon.cli("preset", "ls", "--json")).stdout) == before

    ini_file = tmp_path / "models.ini"
    proc = ok(daemon.cli("preset", "export", "chat", "*", "--format", "ini", "-o", str(ini_file)))
    assert "warning: preset 'chat': env, idle_ttl, pinned cannot be written to INI" in proc.stderr
    text = ini_file.read_text()
    assert "[chat]\nmodel = " in text and "alias = talk\n" in text
    assert "ctx-size = 4096\njinja = false\nlora = a.gguf,b.gguf\n" in text
    assert "[*]\nflash-attn = on\n" in text
    failed(daemon.cli("preset", "import", str(ini_file)), 4)  # names exist
    ok(daemon.cli("preset", "import", str(ini_file), "--replace"))
    chat = json.loads(ok(daemon.cli("preset", "show", "chat", "--json")).stdout)
    assert chat["flags"] == ["--ctx-size", "4096", "--no-jinja", "--lora", "a.gguf,b.gguf"]
    assert (chat["aliases"], chat["env"], chat["pinned"]) == (["talk"], {}, False)
    # and INI -> presets -> INI gives the same file back
    ok(
        daemon.cli(
            "preset", "export", "chat", "*", "--format", "ini", "-o", str(tmp_path / "again.ini")
        )
    )
    assert (tmp_path / "again.ini").read_text() == text


def test_cli_errors_are_one_line(daemon, tmp_path):
    assert "did you mean --ctx-size?" in failed(
        daemon.cli("preset", "save", "p", "--ctx-sise", "1"), 2
    )
    failed(daemon.cli("preset", "save", "p", "--env", "NOEQUALS"), 2)
    failed(daemon.cli("preset", "save", "p", "--idle-ttl", "soon"), 2)
    failed(daemon.cli("preset", "show", "ghost"), 3)
    failed(daemon.cli("preset", "rm", "ghost"), 3)
    failed(daemon.cli("run", "--preset", "ghost", "-c", "1"), 3)
    failed(daemon.cli("run", "-c", "1"), 2)
    bad = tmp_path / "bad.ini"
    bad.write_text("[p]\nthis line is wrong\n")
    assert "INI line 2" in failed(daemon.cli("preset", "import", str(bad)), 2)
    failed(daemon.cli("preset", "import", str(tmp_path / "missing.yaml")), 2)


def test_without_a_binary_presets_save_unchecked(spawn_daemon, tmp_path):
    d = spawn_daemon(CORRAL_LLAMA_SERVER=str(tmp_path / "no-such-llama-server"))
    status, answer = api(d, "PUT", "/api/v1/presets/p", {"flags": ["--whatever", "1"]})
    assert status == 201 and answer["preset"]["flags"] == ["--whatever", "1"]
    assert len(answer["warnings"]) == 1
    assert answer["warnings"][0].startswith("flags not checked: llama-server not found at")
    proc = ok(d.cli("preset", "save", "q", "-c", "1"))
    assert "warning: flags not checked" in proc.stderr
    assert_error(*api(d, "POST", "/api/v1/presets/export", {"format": "ini"}), 424, "no_binary")
    status, answer = api(d, "POST", "/api/v1/presets/export", {"format": "yaml"})
    assert status == 200 and set(yaml.safe_load(answer["text"])["presets"]) == {"p", "q"}


def test_plan_shows_the_merged_command_line_and_runs_nothing(daemon, model_file, fake_binary):
    ok(daemon.cli("preset", "save", "*", "-c", "1024", "--env", "FROM_DEFAULTS=1"))
    ok(daemon.cli("preset", "save", "chat", "--model", str(model_file), "-ngl", "3"))
    status, plan = api(
        daemon, "POST", "/api/v1/instances/plan", {"preset": "chat", "flags": ["-c", "2048"]}
    )
    assert status == 200, plan
    assert plan["argv"][OWNED:] == ["--ctx-size", "2048", "--gpu-layers", "3"]
    assert plan["name"] == "chat" and plan["env"] == {"FROM_DEFAULTS": "1"}
    assert plan["argv"][plan["argv"].index("--port") + 1] == str(plan["port"])
    # a bad flag is the launch's own one-line error; and nothing was ever started
    status, err = api(
        daemon,
        "POST",
        "/api/v1/instances/plan",
        {"model": str(model_file), "flags": ["--ctx-sise", "8"]},
    )
    assert "did you mean --ctx-size" in assert_error(status, err, 400)["message"]
    assert api(daemon, "GET", "/api/v1/instances") == (200, [])
    assert not fake_processes(fake_binary, model=model_file)


def test_api_key_in_preset_masked_in_views_and_kept_when_saved_back(daemon, model_file):
    """Issue 10: secrets in flags are *** wherever corral shows them; a preset is shown
    too (GET, preset ls), and the UI saving back what it was shown keeps the real key."""
    body = {
        "model": str(model_file),
        "flags": ["-c", "2048", "--api-key", "sk-preset-0123456789"],
        "env": {"LLAMA_API_KEY": "sk-env-0123456789", "CUDA_VISIBLE_DEVICES": "0"},
    }
    status, answer = api(daemon, "PUT", "/api/v1/presets/keyed", body)
    assert status == 201
    shown = api(daemon, "GET", "/api/v1/presets/keyed")[1]
    assert shown["flags"] == ["-c", "2048", "--api-key", "***"]
    assert shown["env"] == {"LLAMA_API_KEY": "***", "CUDA_VISIBLE_DEVICES": "0"}
    assert "sk-preset" not in json.dumps(api(daemon, "GET", "/api/v1/presets")[1])
    assert "sk-preset" not in json.dumps(answer)
    # Saved back as shown (with one change): the real key stays.
    status, _ = api(
        daemon,
        "PUT",
        "/api/v1/presets/keyed",
        {**shown, "flags": ["-c", "4096", "--api-key", "***"]},
    )
    assert status == 200
    export = api(daemon, "GET", "/api/v1/presets/keyed/export")[1]["text"]
    assert "sk-preset-0123456789" in export and "sk-env-0123456789" in export
    assert "4096" in export
    # A new preset cannot be given *** for a key it never had.
    assert_error(
        *api(
            daemon,
            "PUT",
            "/api/v1/presets/fresh",
            {"model": str(model_file), "flags": ["--api-key", "***"]},
        ),
        400,
    )
