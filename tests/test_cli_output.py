"""Output details of the command line: progress in pipes, paths in --json, file modes, the demo's hint."""

from __future__ import annotations

import brittle.core.progress as progress


def test_progress_in_a_pipe_is_sparse_plain_lines(capsys, monkeypatch):
    monkeypatch.setattr(progress, "PIPE_INTERVAL_S", 0.0)
    bar = progress.progress_bar(100, desc="input margins", unit="sample")
    for _ in range(10):
        bar.update(10)
    bar.close()
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and lines and lines[-1].startswith("input margins: 100%")
    counts = [ln.split(" [", 1)[0] for ln in lines]
    assert len(counts) == len(set(counts))  # no line repeated
    assert progress.progress_bar(5, enabled=False).disable


def _cli(*args: str, **env: str):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "brittle.cli", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def test_zoo_list_in_a_pipe_shows_every_full_name_and_the_strongest_number():
    from brittle.models import zoo

    proc = _cli("zoo", "list", COLUMNS="80")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert max(len(ln) for ln in lines) <= 80
    names = {ln.split()[0] for ln in lines if ln.strip()}
    assert set(zoo.names()) <= names  # not one cut short
    madry = next(ln for ln in lines if ln.split()[:1] == ["linf_madry"])
    best = zoo.strongest_robust_accuracy(zoo.card("linf_madry"))
    assert best["by"] == "brittle input margins" and best["value"] < zoo.card("linf_madry")["robust_accuracy"]["value"]
    clean, pgd = zoo.card("linf_madry")["clean_accuracy"], zoo.card("linf_madry")["robust_accuracy"]["value"]
    assert f"{100 * clean:.1f}% {100 * best['value']:.1f}% linf 0.3 margins {100 * pgd:.1f}%" in " ".join(madry.split())
    assert "weaker attack" in " ".join(proc.stdout.split())


def test_zoo_show_is_concise_and_full_on_request():
    import json

    from brittle.models import zoo

    short = _cli("zoo", "show", "linf_madry", COLUMNS="80")
    assert short.returncode == 0 and len(short.stdout.splitlines()) < 40 and "history" not in short.stdout
    assert "48.9% at linf ε = 0.3 by margins" in " ".join(short.stdout.split())
    full = _cli("zoo", "show", "linf_madry", "--full")
    assert full.returncode == 0 and "history" in full.stdout
    assert json.loads(_cli("--json", "zoo", "show", "linf_madry").stdout) == zoo.card("linf_madry")


def test_every_card_leads_with_its_strongest_evaluation():
    from brittle.models import zoo

    for name in zoo.names():
        card = zoo.card(name)
        best = zoo.strongest_robust_accuracy(card)
        same = [e["value"] for e in zoo.evaluations(card)
                if e["norm"] == best["norm"] and abs(e["eps"] - best["eps"]) < 1e-9]
        assert best["value"] == min(same) <= card["robust_accuracy"]["value"]
        keys = list(card)
        if "robust_accuracy_strongest" in card:
            assert keys.index("robust_accuracy_strongest") < keys.index("robust_accuracy")
            assert "weaker" in card["robust_accuracy"]["note"]


def test_safe_text_shows_data_literally_without_control_characters():
    """Names from data files, paths and model output are printed through `safe_text`: never markup, no raw
    control characters (ESC, BEL, CR, C1 controls), newlines and tabs kept."""
    import io

    from rich.console import Console

    from brittle.cli._common import safe_text

    text = safe_text("[/bold] [link=https://x]y[/link] :smile: \x1b[2J\x1b]0;t\x07\r\x9b\x7fa\tb\nc")
    assert text.plain == "[/bold] [link=https://x]y[/link] :smile: [2J]0;ta\tb\nc"
    screen = io.StringIO()
    Console(file=screen, force_terminal=True, color_system="truecolor", width=200).print(text)
    assert "\x1b" not in screen.getvalue() and "[link=https://x]y[/link] :smile:" in screen.getvalue()


def test_error_and_warning_lines_print_their_message_literally(capsys):
    """One-line errors name paths, columns and library messages (torch's hold ANSI codes): printed as they are,
    without their control characters (markup was escaped before, but a raw ESC reached the terminal)."""
    from brittle.cli.app import _error, _one_line_warning

    _error("cannot read [/x].csv \x1b[1mbold\x1b[0m. Fix: pass [link=https://x]a file[/link]")
    _one_line_warning(UserWarning("odd [bold]name\x1b]0;t\x07"), UserWarning, "f.py", 1)
    err = capsys.readouterr().err
    assert err == ("error: cannot read [/x].csv [1mbold[0m. Fix: pass [link=https://x]a file[/link]\n"
                   "warning: odd [bold]name]0;t\n"), repr(err)


def test_margins_only_rewrites_a_cards_margin_evaluation_and_its_headline(tmp_path, monkeypatch):
    """`brittle zoo build --margins-only` re-measures the cards' margins (now with the audit's budget stage)
    and re-derives the headline robust accuracy from every evaluation, keeping the card's layout."""
    import json
    import shutil

    import brittle.models.zoo.build as build
    from brittle.models import zoo

    for sub in ("cards", "weights"):
        (tmp_path / sub).mkdir()
    shutil.copy(zoo._folder("cards") / "linf_madry.json", tmp_path / "cards")
    shutil.copy(zoo._folder("weights") / "linf_madry.pt", tmp_path / "weights")
    before = json.loads((tmp_path / "cards" / "linf_madry.json").read_text())
    seen = []

    def fake(model, data, norm, eps):
        seen.append((norm, eps, len(data)))
        return {**before["margin_consistency_estimate"], "robust_accuracy_from_margins": {"eps": eps, "value": 0.123}}

    monkeypatch.setattr(build, "estimate_margin_consistency", fake)
    build.build_zoo(tmp_path, None, ["linf_madry"], "cpu", command="brittle zoo build --margins-only",
                    margins_only=True)
    after = json.loads((tmp_path / "cards" / "linf_madry.json").read_text())
    assert seen == [("linf", 0.3, 10000)]
    assert after["robust_accuracy_strongest"]["value"] == 0.123
    assert after["robust_accuracy_strongest"]["by"] == "brittle input margins"
    assert [w["value"] for w in after["robust_accuracy_strongest"]["weaker"]] == sorted(
        [e["value"] for e in before["robust_accuracy_extra"] if e["norm"] == "linf" and e["eps"] == 0.3]
        + [before["robust_accuracy"]["value"]])
    keys = list(after)
    assert keys.index("robust_accuracy_strongest") < keys.index("robust_accuracy")
    assert after["margins_evaluated_with"] == "brittle zoo build --margins-only"
    assert {k: v for k, v in after.items() if k not in ("robust_accuracy_strongest", "margin_consistency_estimate",
                                                         "margins_evaluated_with")} == \
        {k: v for k, v in before.items() if k not in ("robust_accuracy_strongest", "margin_consistency_estimate",
                                                      "margins_evaluated_with")}


def test_safe_text_drops_bidirectional_overrides():
    """A name holding U+202E (right-to-left override) shows reordered on the terminal (Trojan Source)."""
    from brittle.cli._common import safe_text

    assert safe_text("cost\u202e ssap \u2066x\u2069\u200d").plain == "cost ssap x\u200d"  # zero-width joiner kept
