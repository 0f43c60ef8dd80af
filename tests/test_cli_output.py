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
    assert "55.9% at linf ε = 0.3 by margins" in " ".join(short.stdout.split())
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
