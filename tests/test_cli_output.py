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
