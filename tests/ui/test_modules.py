"""The UI's pure modules (SSE parser, flag typing, shell quoting) run in the browser,
loaded from the daemon as the views load them."""

from __future__ import annotations


def run(ui, script: str, arg=None):
    page = ui.open()
    page.wait_for_selector("#view[data-view=dashboard]")
    return page.evaluate(script, arg)


def test_sse_parser_reassembles_split_chunks(ui):
    stream = (
        'data: {"a": 1}\r\n\r\n: keep-alive\n\nevent: instance\ndata: line one\ndata: line two\n\n'
        'id: 7\ndata:no-space\n\ndata: "tail"\n\n'
    )
    events = run(
        ui,
        """async (text) => {
        const { SSEParser } = await import('/ui/js/sse.js');
        const out = [];
        for (const size of [1, 3, 7, text.length]) {
            const p = new SSEParser();
            const got = [];
            for (let i = 0; i < text.length; i += size) got.push(...p.push(text.slice(i, i + size)));
            out.push(got);
        }
        return out;
    }""",
        stream,
    )
    want = [
        {"event": "message", "data": '{"a": 1}', "id": None},
        {"event": "instance", "data": "line one\nline two", "id": None},
        {"event": "message", "data": "no-space", "id": "7"},
        {"event": "message", "data": '"tail"', "id": None},
    ]
    assert all(got == want for got in events), events


def test_flag_typing_and_validation(ui):
    flags = {
        "ctx": {
            "names": ["-c", "--ctx-size"],
            "long": "--ctx-size",
            "takes_value": True,
            "value_hint": "N",
            "choices": None,
            "help": "size of the prompt context",
            "nargs": 1,
        },
        "ngl": {
            "names": ["-ngl", "--gpu-layers"],
            "long": "--gpu-layers",
            "takes_value": True,
            "value_hint": "N",
            "choices": None,
            "help": "either an exact number, 'auto', or 'all' (default: auto)",
            "nargs": 1,
        },
        "fa": {
            "names": ["-fa", "--flash-attn"],
            "long": "--flash-attn",
            "takes_value": True,
            "value_hint": "[on|off|auto]",
            "choices": ["on", "off", "auto"],
            "help": "",
            "nargs": 1,
        },
        "poll": {
            "names": ["--poll"],
            "long": "--poll",
            "takes_value": True,
            "value_hint": "<0...100>",
            "choices": None,
            "help": "",
            "nargs": 1,
        },
        "range": {
            "names": ["--control-vector-layer-range"],
            "long": "--control-vector-layer-range",
            "takes_value": True,
            "value_hint": "START END",
            "choices": None,
            "help": "",
            "nargs": 2,
        },
        "lora": {
            "names": ["--lora"],
            "long": "--lora",
            "takes_value": True,
            "value_hint": "FNAME",
            "choices": None,
            "help": "",
            "nargs": 1,
            "repeatable": True,
        },
        "mmap": {
            "names": ["--mmap"],
            "long": "--mmap",
            "takes_value": False,
            "negations": ["--no-mmap"],
            "value_hint": None,
            "choices": None,
            "help": "",
            "nargs": 0,
        },
    }
    out = run(
        ui,
        """async (f) => {
        const m = await import('/ui/js/flags.js');
        const fmt = await import('/ui/js/format.js');
        const v = (k, x) => m.validate(f[k], x);
        return {
            kinds: Object.fromEntries(Object.entries(f).map(([k, x]) => [k, m.kindOf(x)])),
            ok: [v('ctx', '4096'), v('ctx', '-1'), v('ngl', 'all'), v('ngl', '99'), v('fa', 'enabled'),
                 v('poll', '50'), v('range', '0 10'), v('lora', 'a.gguf\\nb.gguf')],
            bad: [v('ctx', 'lots'), v('ngl', 'most'), v('fa', 'maybe'), v('poll', '101'), v('range', '3'),
                  v('ctx', '1\\n2')],
            tokens: m.toTokens(Object.values(f), {'--ctx-size': '4096', '--mmap': 'off',
                '--control-vector-layer-range': '0 10', '--lora': 'a.gguf\\nb.gguf'}),
            back: m.fromTokens(Object.values(f), ['-c', '8', '--no-mmap', '--lora', 'x', '--lora=y', '--weird', '1']),
            named: m.flagInMessage(Object.values(f), "invalid value 'x' for -fa (choose from on, off, auto)")?.long,
            split: fmt.shellSplit(`--a 'b c' "d \\\\"e\\\\"" f\\\\ g`),
            quoted: ['plain', 'two words', "it's"].map(fmt.shellQuote),
        };
    }""",
        flags,
    )
    assert out["kinds"] == {
        "ctx": "number",
        "ngl": "number",
        "fa": "choice",
        "poll": "number",
        "range": "pair",
        "lora": "text",
        "mmap": "switch",
    }
    assert out["ok"] == [None] * 8
    assert out["bad"] == [
        "--ctx-size takes a number (got 'lots')",
        "--gpu-layers takes a number or auto, all (got 'most')",
        "--flash-attn: 'maybe' is not one of on, off, auto",
        "--poll takes 0 to 100 (got 101)",
        "--control-vector-layer-range takes 2 values: START END",
        "--ctx-size: one line only",
    ]
    assert out["tokens"] == [
        "--ctx-size",
        "4096",
        "--control-vector-layer-range",
        "0",
        "10",
        "--lora",
        "a.gguf",
        "--lora",
        "b.gguf",
        "--no-mmap",
    ]
    assert out["back"] == {
        "values": {"--ctx-size": "8", "--mmap": "off", "--lora": "x\ny"},
        "rest": ["--weird", "1"],
    }
    assert out["named"] == "--flash-attn"
    assert out["split"] == ["--a", "b c", 'd "e"', "f g"]
    assert out["quoted"] == ["plain", "'two words'", "'it'\\''s'"]


def test_chat_model_labels_name_the_nodes_of_node_only_models(ui):
    labels = run(
        ui,
        """async (entries) => {
        const { modelLabel } = await import('/ui/js/views/chat.js');
        return entries.map(modelLabel);
    }""",
        [
            {"id": "here"},  # a daemon without nodes: no local/nodes fields
            {"id": "both", "local": True, "nodes": ["box"]},  # served here first
            {"id": "gemma", "local": False, "nodes": ["box"]},
            {"id": "qwen", "local": False, "nodes": ["box", "gpu-2", 7]},
            {"id": "odd", "local": False, "nodes": "box"},
        ],
    )
    assert labels == ["here", "both", "gemma — on box", "qwen — on box, gpu-2", "odd"]
