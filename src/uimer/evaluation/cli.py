"""Attribution sub-commands of the `uimer` CLI: `explain`, `evaluate-rationales`, `case-study`,
`attribution-accuracy`.

`register(subparsers)` adds them; each leaf sets `func`. They all load models saved by
`uimer train --save-model` (OUTPUT/models/seed<S>), pick an interpretation method (default: the one the model
was trained with) and set it up for that model (see `uimer.evaluation.attributions.prepare_method`). The
method flags of `uimer train` (--im-k, --mlm, --dm-gate, --extractor-epochs, ...) apply here too.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from uimer.atomic import write_text_atomic
from uimer.checks import POSITIVE_INT, SEED, Domain, check_device
from uimer.errors import ConfigError

THRESHOLDS_PERCENT = (1.0, 5.0, 10.0, 20.0, 50.0)
DM_TRAIN_SIZE = 256


# -- shared options ---------------------------------------------------------------------------------------
def _add_common(p: argparse.ArgumentParser, *, task: bool = False) -> None:
    from uimer.interpret import METHODS, add_method_options

    p.add_argument("--method", choices=sorted(m for m in METHODS if m != "baseline"), metavar="METHOD", default=None,
                   help="interpretation method (default: the one the model was trained with); one of "
                        + ", ".join(sorted(m for m in METHODS if m != "baseline")))
    p.add_argument("--data-dir", default=None,
                   help="data root (default: $UIMER_DATA_DIR, else ~/.cache/uimer/data); needed for im-prior and "
                        "for DM models saved without an extractor")
    if task:
        p.add_argument("--task", default=None, help="task to read (default: the one the model was trained on)")
    p.add_argument("--rationale-file", default=None, help="YAML with your own keywords/regexes (uimer rationales)")
    subset = p.add_mutually_exclusive_group()
    subset.add_argument("--shot", type=Domain(int, 1, 100000), default=None,
                        help="rebuild the model's n-shot training subset (with its seed) for the DM extractor / "
                             "IM prior (default: the saved model's, when its metadata records one)")
    subset.add_argument("--train-size", type=Domain(int, 1, 10**9), default=None,
                        help="likewise for a k-example training subset (e-SNLI, JSONL)")
    p.add_argument("--dm-train-size", type=Domain(int, 1, 10**9), default=DM_TRAIN_SIZE,
                   help=f"training examples for an on-the-fly DM extractor without --shot (default {DM_TRAIN_SIZE})")
    p.add_argument("--seed", type=SEED, default=None, help="seed for IM proposals / DM extractor (default: the model's)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--batch-size", type=Domain(int, 1, 65536), default=32)
    p.add_argument("--max-length", type=Domain(int, 4, 8192), default=128, help="word pieces per input, as in training")
    p.set_defaults(method_dests=list(add_method_options(p)))


def _add_sentences(p: argparse.ArgumentParser) -> None:
    p.add_argument("sentences", nargs="+", help="sentences (whitespace-tokenised)")
    p.add_argument("--pair", action="append", help="hypothesis for each sentence (pair tasks), in order")
    p.add_argument("--label", action="append", help="gold label name for each sentence, in order (optional)")
    p.add_argument("--rationale", action="append",
                   help="gold rationale flags per word for each sentence, e.g. '0 1 0 0' (optional; otherwise the "
                        "task's rules mark them, with the gold label or else the prediction)")
    p.add_argument("--target", choices=("pred", "gold"), default="pred",
                   help="explain the predicted label (default) or the gold --label")
    p.add_argument("--html", default=None, metavar="FILE", help="also write a self-contained HTML heatmap page")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the scores as JSON")


def _device(args) -> str:
    if args.device:
        return check_device(args.device)
    from uimer.checks import default_device

    return default_device()


def _log(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[dim]{message}[/dim]")


def _method_name(args, saved) -> str:
    name = args.method or saved.info.get("method")
    if not name or name == "baseline":
        raise ConfigError(f"{saved.path} was trained as a baseline; choose an interpretation method with --method")
    return name


def _read_meta(model_dir: str) -> dict:
    """The saved model's `uimer-model.json` (task, labels, method, ...), without loading its weights."""
    path = Path(model_dir) / "uimer-model.json"
    if not path.exists():
        raise ConfigError(f"{model_dir} is not a saved uimer model (no uimer-model.json)")
    return json.loads(path.read_text())


def _task_name(args, saved) -> str | None:
    return getattr(args, "task", None) or saved.info.get("task")


def _load_task(args, task_name: str | None):
    from uimer.data.paths import resolve_data_dir
    from uimer.data.tasks import load_task

    if not task_name:
        raise ConfigError("the saved model does not name its task; pass --task")
    if task_name == "jsonl" and not args.data_dir:
        raise ConfigError("--task jsonl needs --data-dir pointing at the folder with train/dev/test.jsonl")
    rationale_file = Path(args.rationale_file) if args.rationale_file else None
    return load_task(task_name, resolve_data_dir(args.data_dir), rationale_file)


def _training_examples(args, saved, method, task=None) -> list | None:
    """The training examples a method needs to be prepared (IM prior, DM without a saved extractor), else None."""
    import torch

    from uimer.evaluation.attributions import EXTRACTOR_FILE

    needs = (method.family == "im" and getattr(method, "strategy", "") == "prior") or (
        method.family == "dm" and not (saved.path / EXTRACTOR_FILE).exists())
    if not needs:
        return None
    task = task or _load_task(args, _task_name(args, saved))
    seed = args.seed if args.seed is not None else saved.seed
    shot, train_size = args.shot, args.train_size
    if shot is None and train_size is None:
        shot, train_size = saved.info.get("shot"), saved.info.get("train_size")
    if shot or train_size:
        from uimer.training.runner import select_train_indices

        return [task.train[i] for i in select_train_indices(task, shot, train_size, seed)]
    if method.family == "dm" and args.dm_train_size and args.dm_train_size < len(task.train):
        order = torch.randperm(len(task.train), generator=torch.Generator().manual_seed(seed)).tolist()
        return [task.train[i] for i in sorted(order[: args.dm_train_size])]
    return list(task.train)


def _prepared(args, model_dir: str, method_name: str | None = None, task=None):
    """(saved model, prepared method) for a model directory."""
    import torch

    from uimer.evaluation.attributions import PrepareOptions, load_saved_model, prepare_method
    from uimer.interpret import create_method

    device = _device(args)
    saved = load_saved_model(model_dir, device)
    name = method_name or _method_name(args, saved)
    options = {dest: getattr(args, dest) for dest in args.method_dests}
    method = create_method(name, options)
    seed = args.seed if args.seed is not None else saved.seed
    prepare_method(method, saved, PrepareOptions(
        device=torch.device(device), seed=seed, max_length=args.max_length,
        batch_size=args.batch_size, train_examples=_training_examples(args, saved, method, task), log=_log))
    return saved, method


def _sentence_examples(args, saved):
    from uimer.data.types import TaskKind
    from uimer.evaluation.analysis import build_examples

    examples = build_examples(args.sentences, saved.kind, saved.labels, pairs=args.pair, gold_labels=args.label,
                              rationales=args.rationale)
    gold_known = [bool(args.label)] * len(examples)
    return examples, gold_known, saved.kind is TaskKind.TAGGING


def _fill_rationales(args, saved, examples, gold_known, predictions: list[str | None]) -> None:
    from uimer.evaluation.analysis import mark_rationales, rationale_source

    source = rationale_source(_task_name(args, saved), args.rationale_file)
    names = [saved.labels[e.label] if known else pred
             for e, known, pred in zip(examples, gold_known, predictions, strict=True)]
    mark_rationales(examples, source, saved.labels, names)


def _predicted_names(saved, examples, args) -> list[str | None]:
    """Predicted labels (class tasks) used to mark rule rationales when no gold label is given."""
    import torch

    from uimer.data.types import TaskKind
    from uimer.evaluation.attributions import encode_with_words, predict_batch

    if saved.kind is TaskKind.TAGGING:
        return [None] * len(examples)
    encoded = encode_with_words(examples, saved.tokenizer, saved.kind, args.max_length)
    names: list[str | None] = [None] * len(examples)
    device = _device(args)
    with torch.no_grad():
        for batch in encoded.split.batches(args.batch_size):
            _, pred = predict_batch(saved.model, batch.to(device))
            for i, p in zip(batch.index.tolist(), pred.tolist(), strict=True):
                names[i] = saved.labels[p]
    return names


def _write_outputs(args, explanations, title: str) -> None:
    from uimer.evaluation.render import explanations_html

    if args.html:
        path = Path(args.html)
        write_text_atomic(path, explanations_html(explanations, title=title))
        _log(f"HTML heatmap written to {path}")
    if args.json:
        write_text_atomic(Path(args.json), json.dumps([e.as_dict() for e in explanations], indent=2))


# -- explain ----------------------------------------------------------------------------------------------
def cmd_explain(args) -> int:
    from rich.console import Console

    from uimer.evaluation.analysis import explain_examples
    from uimer.evaluation.render import explanation_renderable

    saved, method = _prepared(args, args.model)
    examples, gold_known, _ = _sentence_examples(args, saved)
    _fill_rationales(args, saved, examples, gold_known, _predicted_names(saved, examples, args))
    explanations = explain_examples(method, saved, examples, target=args.target, pieces=args.pieces,
                                    batch_size=args.batch_size, max_length=args.max_length, device=_device(args),
                                    model_name=str(Path(args.model)), gold_known=gold_known)
    console = Console()
    for explanation in explanations:
        console.print(explanation_renderable(explanation))
        console.print()
    _write_outputs(args, explanations, f"uimer explain · {method.name}")
    return 0


# -- case study (Table 3) ----------------------------------------------------------------------------------
def cmd_case_study(args) -> int:
    from rich.console import Console

    from uimer.evaluation.analysis import explain_examples
    from uimer.evaluation.render import case_study_table

    saved, method = _prepared(args, args.model)
    base, base_method = _prepared(args, args.base_model, method.name)
    if base.labels != saved.labels or base.kind is not saved.kind:
        raise ConfigError("--base-model and --model must be trained on the same task (labels differ)")
    examples, gold_known, _ = _sentence_examples(args, saved)
    _fill_rationales(args, saved, examples, gold_known, _predicted_names(saved, examples, args))
    common = dict(target=args.target, batch_size=args.batch_size, max_length=args.max_length, device=_device(args),
                  gold_known=gold_known)
    family = method.family.upper()
    base_rows = explain_examples(base_method, base, examples, model_name=f"BaseModel +{family}", **common)
    rows = explain_examples(method, saved, examples, model_name=f"UIMER-{family}", **common)
    console = Console()
    console.print(f"BaseModel = {args.base_model}; UIMER-{family} = {args.model} (trained as {saved.name}); "
                  f"method {method.name}")
    ordered = []
    for i, (b, u) in enumerate(zip(base_rows, rows, strict=True)):
        console.print(case_study_table([b, u], title=f"sentence {i + 1} · {method.name} scores in {u.unit}"))
        ordered += [b, u]
    _write_outputs(args, ordered, f"uimer case study · {method.name}")
    return 0


# -- evaluate-rationales ------------------------------------------------------------------------------------
def _parse_top_k(value: str) -> int | None:
    if value == "gold":
        return None
    try:
        k = int(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError("--top-k is 'gold' or a positive integer") from err
    if k < 1:
        raise argparse.ArgumentTypeError("--top-k must be >= 1")
    return k


def _split_examples(args, task):
    split = getattr(task, args.split)
    if args.limit:
        split = split[: args.limit]
    return split


def metrics_table(results, title: str):
    """Name, value, range and direction of every metric, plausibility then faithfulness (the AOPC curves
    go in `aopc_table`)."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("range", no_wrap=True)
    table.add_column("better", no_wrap=True)
    table.add_column("notes")
    family = None
    for r in results:
        if family is not None and r.family != family:
            table.add_section()
        family = r.family
        notes = r.family
        if r.name.startswith("token_"):
            notes += f", k = {r.details['k']} (mean {r.details['mean_k']:.2f})"
        elif r.name == "iou_f1":
            notes += f", IOU >= {r.details['iou_threshold']:g}"
        elif r.name == "auprc":
            notes += ", mean AP"
        elif "curve" in r.details:
            notes += ", mean of thresholds"
        else:
            notes += ", top-k words"
        value = "nan" if math.isnan(r.value) else f"{r.value:.4f}"
        table.add_row(r.name, value, f"[{r.range[0]:g}, {r.range[1]:g}]", "↓" if r.lower_is_better else "↑", notes)
    return table


def aopc_table(results):
    """Comprehensiveness / sufficiency per AOPC threshold (None when faithfulness was not computed)."""
    from rich.table import Table

    curves = [r for r in results if "curve" in r.details]
    if not curves:
        return None
    table = Table(title="drop of p(target) per threshold")
    table.add_column("metric", no_wrap=True)
    for t in curves[0].details["thresholds"]:
        table.add_column(f"{100 * t:g}%", justify="right")
    for r in curves:
        table.add_row(r.name, *(f"{v:.4f}" for v in r.details["curve"]))
    return table


def cmd_evaluate_rationales(args) -> int:
    from rich.console import Console

    from uimer.evaluation.attributions import score_examples
    from uimer.evaluation.rationale_metrics import evaluate_instances

    if any(not 0 < t <= 100 for t in args.thresholds):
        raise ConfigError("--thresholds are percentages in (0, 100]")
    task = _load_task(args, getattr(args, "task", None) or _read_meta(args.model).get("task"))
    saved, method = _prepared(args, args.model, task=task)
    if saved.labels != task.labels:
        raise ConfigError(f"the model's labels differ from task {task.name}'s; pass the task it was trained on")
    examples = _split_examples(args, task)
    fractions = tuple(t / 100 for t in args.thresholds)
    scored = score_examples(method, saved, examples, top_k=args.top_k, fractions=fractions, removal=args.removal,
                            target=args.target, faithfulness=not args.no_faithfulness,
                            batch_size=args.batch_size, max_length=args.max_length, device=_device(args))
    results = evaluate_instances(scored.instances)
    console = Console()
    title = f"{task.name} {args.split} · {method.name} · {Path(args.model)}"
    console.print(metrics_table(results, title))
    curves = aopc_table(results)
    if curves is not None:
        console.print(curves)
    n_scored = int((scored.instances.gold & scored.instances.mask).any(1).sum())
    console.print(
        f"scored {n_scored} of {len(examples)} {args.split} examples (those with a gold rationale); unit: words "
        f"(piece scores max-pooled; IM scores whole words); target: "
        f"{'predicted' if args.target == 'pred' else 'gold'} label; top-k: "
        f"{'gold rationale size' if args.top_k is None else args.top_k}")
    if not args.no_faithfulness:
        console.print(f"AOPC thresholds: {', '.join(f'{t:g}%' for t in args.thresholds)} of each example's words "
                      f"(top ceil(f·n), at least 1); removal: {scored.removal}")
    summary = {
        "model": str(args.model), "method": method.name, "task": task.name, "split": args.split,
        "examples": len(examples), "scored": n_scored, "target": args.target,
        "top_k": "gold" if args.top_k is None else args.top_k,
        "thresholds": list(fractions) if not args.no_faithfulness else [], "removal": scored.removal,
        "metrics": {r.name: r.as_dict() for r in results},
    }
    if args.json:
        write_text_atomic(Path(args.json), json.dumps(summary, indent=2, default=float))
    if args.export_eraser:
        from uimer.evaluation.eraser import eraser_records, write_jsonl

        records = eraser_records(scored, saved.labels, saved.kind, f"{task.name}:{args.split}")
        path = write_jsonl(records, args.export_eraser)
        console.print(f"ERASER predictions ({len(records)} lines) written to {path}")
    return 0


# -- attribution-accuracy (Table 4) -------------------------------------------------------------------------
def cmd_attribution_accuracy(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from uimer.evaluation.analysis import attribution_accuracy
    task = _load_task(args, getattr(args, "task", None) or _read_meta(args.model).get("task"))
    saved, method = _prepared(args, args.model, task=task)
    base, base_method = _prepared(args, args.base_model, method.name, task=task)
    for model in (saved, base):
        if model.labels != task.labels:
            raise ConfigError(f"{model.path}: labels differ from task {task.name}'s")
    examples = _split_examples(args, task)
    common = dict(target=args.target, batch_size=args.batch_size, max_length=args.max_length, device=_device(args))
    family = method.family.upper()
    rows = [
        attribution_accuracy(base_method, base, examples, model_name=f"BaseModel +{family}", **common),
        attribution_accuracy(method, saved, examples, model_name=f"{saved.name} +{family}", **common),
    ]
    table = Table(title=f"{task.name} {args.split} · {method.name} · accuracy by a_R > a_N (%)")
    for column in ("model", "Acc. a_R > a_N", "Acc. a_R ≤ a_N", "% a_R > a_N", "Acc.", "n (valid / all)"):
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=column == "model")

    def pct(x: float) -> str:
        return "—" if math.isnan(x) else f"{100 * x:.2f}"

    for r in rows:
        table.add_row(r.model, pct(r.accuracy_r_gt_n), pct(r.accuracy_r_le_n), pct(r.share_r_gt_n), pct(r.accuracy),
                      f"{r.valid} / {r.examples}")
    console = Console()
    console.print(table)
    how = ("a_R, a_N = Eq. 4 multi-token IM scores" if method.family == "im"
           else "a_R, a_N = mean word score over rationale / other words")
    console.print(f"{how}; target: {'gold' if args.target == 'gold' else 'predicted'} label; valid = examples with "
                  "both a rationale and a non-rationale word")
    if args.json:
        write_text_atomic(Path(args.json), json.dumps({"task": task.name, "split": args.split, "method": method.name,
                                                       "rows": [r.as_dict() for r in rows]}, indent=2))
    return 0


# -- registration -----------------------------------------------------------------------------------------
def register(subparsers) -> None:
    p = subparsers.add_parser("explain", help="per-token attribution heatmap of a saved model for sentences")
    p.add_argument("--model", required=True, help="a directory written by `uimer train --save-model`")
    _add_sentences(p)
    p.add_argument("--pieces", action="store_true", help="show word pieces instead of words (GB and DM)")
    p.add_argument("--task", default=None, help="task for rule rationales / training data (default: the model's)")
    _add_common(p)
    p.set_defaults(func=cmd_explain)

    p = subparsers.add_parser("case-study", help="Table 3: base vs UIMER model attributions for sentences")
    p.add_argument("--base-model", required=True, help="saved base model directory")
    p.add_argument("--model", required=True, help="saved UIMER model directory")
    _add_sentences(p)
    p.add_argument("--task", default=None, help="task for rule rationales / training data (default: the model's)")
    _add_common(p)
    p.set_defaults(func=cmd_case_study, pieces=False)

    p = subparsers.add_parser("evaluate-rationales",
                              help="plausibility and faithfulness of attributions against gold rationales")
    p.add_argument("--model", required=True, help="a directory written by `uimer train --save-model`")
    p.add_argument("--split", choices=("train", "dev", "test"), default="test")
    p.add_argument("--top-k", type=_parse_top_k, default=None, metavar="K",
                   help="hard rationale size: 'gold' (default: the example's number of gold words) or a fixed K")
    p.add_argument("--thresholds", type=Domain(float, 0, 100, low_open=True), nargs="+", default=list(THRESHOLDS_PERCENT), metavar="PCT",
                   help="AOPC thresholds in %% of words (default: ERASER's 1 5 10 20 50)")
    p.add_argument("--removal", choices=("auto", "delete", "mask"), default="auto",
                   help="remove words by deleting their pieces (ERASER; auto except slot filling) or by [MASK]")
    p.add_argument("--target", choices=("pred", "gold"), default="pred",
                   help="explain and perturb the predicted class (ERASER, default) or the gold one")
    p.add_argument("--no-faithfulness", action="store_true", help="plausibility only (no perturbed forwards)")
    p.add_argument("--export-eraser", default=None, metavar="FILE", help="write ERASER-format prediction JSONL")
    p.add_argument("--json", default=None, metavar="FILE", help="write the metrics as JSON")
    p.add_argument("--limit", type=POSITIVE_INT, default=None, help="only the first N examples of the split")
    _add_common(p, task=True)
    p.set_defaults(func=cmd_evaluate_rationales)

    p = subparsers.add_parser("attribution-accuracy",
                              help="Table 4: accuracy when a_R > a_N vs a_R <= a_N, base vs UIMER model")
    p.add_argument("--base-model", required=True, help="saved base model directory")
    p.add_argument("--model", required=True, help="saved UIMER model directory")
    p.add_argument("--split", choices=("train", "dev", "test"), default="test")
    p.add_argument("--target", choices=("pred", "gold"), default="gold",
                   help="attribute the gold class (default, Eq. 4) or the predicted one")
    p.add_argument("--json", default=None, metavar="FILE", help="write the rows as JSON")
    p.add_argument("--limit", type=POSITIVE_INT, default=None, help="only the first N examples of the split")
    _add_common(p, task=True)
    p.set_defaults(func=cmd_attribution_accuracy)
