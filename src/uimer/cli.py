"""The `uimer` command line: train, predict, and the data / rationale tools."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from uimer.checks import SEED
from uimer.data.types import TASKS
from uimer.errors import ConfigError, UimerError, UimerWarning

TASK_CHOICES = TASKS  # defined once, in uimer.data.types


class Parser(argparse.ArgumentParser):
    """argparse with the project's one-line errors: `uimer: error: argument --flag: ...`, exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"uimer: error: {message} (see `{self.prog} --help`)\n")


def _parse_seeds(values: list[str], flag: str = "--seeds") -> list[int]:
    seeds: list[int] = []
    for value in values:
        for part in value.replace(":", ",").split(","):
            if part.strip():
                try:
                    seed = SEED.parse(part.strip())
                except ValueError as err:
                    raise ConfigError(f"{flag}: each seed {err}") from None
                seeds.append(int(seed))
    if not seeds:
        raise ConfigError(f"{flag}: give at least one seed")
    return seeds


def _warmup(value: str) -> float | str:
    from uimer.training.trainer import TRAIN_DOMAINS, parse_warmup

    if value in ("task", "task-trained") or value.strip().endswith("*"):
        try:
            return parse_warmup(value)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    try:
        return TRAIN_DOMAINS["warmup_epochs"].parse(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{err} (or 'F*', a share of all batches, or 'task')") from None


def _default_device() -> str:
    from uimer.training.runner import check_device

    return check_device("auto")


def _path_text(value: str) -> str:
    """A path flag: non-empty and without NUL bytes (which no file system accepts)."""
    if not value.strip() or "\0" in value:
        raise argparse.ArgumentTypeError(f"expected a path, got {value!r}")
    return value


def add_train_parser(subparsers) -> None:
    from uimer.interpret import METHODS, add_method_options
    from uimer.models.task_model import PRECISIONS
    from uimer.training.runner import PAPER_SEEDS, SPEC_DOMAINS
    from uimer.training.trainer import TRAIN_DOMAINS as T
    from uimer.training.trainer import TrainConfig

    spec = {name: domain for name, (_, domain) in SPEC_DOMAINS.items()}
    defaults = TrainConfig()
    p = subparsers.add_parser("train", help="train base or UIMER models over several seeds")
    p.add_argument("--task", required=True, choices=TASK_CHOICES)
    setting = p.add_mutually_exclusive_group()
    setting.add_argument("--shot", type=spec["shot"],
                         help="n-shot subset (the reference sampler; SNIPS, or JSONL data); omit for full data")
    setting.add_argument("--train-size", type=spec["train_size"],
                         help="number of training examples drawn with the seed (e-SNLI)")
    p.add_argument("--method", nargs="+", default=["baseline"], choices=["auto", *sorted(METHODS)], metavar="METHOD",
                   help=f"one or more of: {', '.join(sorted(METHODS))}; 'auto' = the recommended method and "
                        "values for the task's kind (`uimer presets` shows them and their source)")
    p.add_argument("--seeds", nargs="+", default=[",".join(map(str, PAPER_SEEDS))],
                   help="seeds, space-, comma- or colon-separated (default: the paper's 55,1988,12333,42)")
    p.add_argument("--encoder", default="minilm", help="'minilm' (packaged), a Hugging Face name or a local path")
    p.add_argument("--output-dir", default="runs/latest", type=_path_text)
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of another configuration (or an older uimer version) in OUTPUT")
    p.add_argument("--data-dir", default=None, type=_path_text,
                   help="dataset root (default: $UIMER_DATA_DIR, else ~/.cache/uimer/data)")
    p.add_argument("--rationale-file", default=None, type=_path_text, help="YAML with your own keywords/regexes")
    p.add_argument("--strict", action="store_true",
                   help="a rationale file that matches no label or no example is an error, not a warning")
    p.add_argument("--lr", type=T["lr"], default=defaults.lr)
    p.add_argument("--batch-size", type=T["batch_size"], default=defaults.batch_size)
    p.add_argument("--max-epochs", type=T["max_epochs"], default=defaults.max_epochs)
    p.add_argument("--patience", type=T["patience"], default=defaults.patience, help="early-stopping patience in epochs")
    p.add_argument("--alpha", type=T["alpha"], default=defaults.alpha, help="weight of L_int")
    p.add_argument("--warmup-epochs", type=_warmup, default=0.0,
                   help="epochs on L_task before L_int is switched on (a fraction counts one epoch's batches; "
                        "'F*' = the share F of all training batches, the paper's NLI '0.1*'; 'task' = until early stop)")
    p.add_argument("--weight-decay", type=T["weight_decay"], default=defaults.weight_decay)
    p.add_argument("--dev-size", type=spec["dev_size"], default=None,
                   help="select models on a seeded, label-stratified dev subset")
    p.add_argument("--max-length", type=spec["max_length"], default=128,
                   help="word pieces per input, [CLS]/[SEP] included")
    p.add_argument("--pooling", choices=("cls", "mean"), default="cls", help="sentence representation for class heads")
    p.add_argument("--eval-batch-size", type=T["eval_batch_size"], default=defaults.eval_batch_size)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N, mps or auto (default: cuda when available)")
    p.add_argument("--precision", choices=PRECISIONS, default=defaults.precision,
                   help="bf16 runs the encoder under autocast (losses stay fp32); for GPUs with bf16 units")
    p.add_argument("--save-model", action="store_true", help="save each seed's best model under OUTPUT/models/")
    p.add_argument("--no-progress", action="store_true")
    # Method flags stay None unless given: a run records exactly the options its command line sets (a grid cell
    # records what its YAML sets), and the method fills in the rest from its options dataclass.
    added = add_method_options(p, defaults=False)
    method_dests = list(added)
    # dest -> (flag, group title, default)
    option_flags = {dest: (action.option_strings[0], title, action.default) for dest, (action, title) in added.items()}
    p.set_defaults(func=cmd_train, method_dests=method_dests, option_flags=option_flags,
                   parser_defaults={a.dest: a.default for a in p._actions})


def _apply_auto(args) -> tuple[object, dict, dict]:
    """Resolve `--method auto` by the task's kind: the preset's shared settings go into `args` (every method
    of the command), its own settings and options are returned for the auto method. Given flags win."""
    from uimer.experiments.presets import preset_for, task_kind
    from uimer.training.trainer import parse_warmup

    preset = preset_for(task_kind(args.task, args.data_dir, args.rationale_file))

    def given(dest: str) -> bool:
        return getattr(args, dest, None) != args.parser_defaults.get(dest)

    kept = []
    for key, value in preset.shared.items():
        if given(key):
            kept.append(key)
        else:
            setattr(args, key, parse_warmup(value) if key == "warmup_epochs" else value)
    train = {k: (parse_warmup(v) if k == "warmup_epochs" else v) for k, v in preset.train.items() if not given(k)}
    options = {k: v for k, v in preset.options.items() if not given(k)}
    kept += [k for k in [*preset.train, *preset.options] if given(k)]
    print(f"--method auto: a {preset.kind} task -> {preset.describe()}"
          + (f"; your {', '.join('--' + k.replace('_', '-') for k in kept)} kept" if kept else ""), file=sys.stderr)
    print(f"  where these values come from: {preset.source}", file=sys.stderr)
    return preset, train, options


def check_method_flags(args, methods: list[str]) -> None:
    """A method flag that none of the chosen methods reads would be silently ignored: refuse it."""
    from uimer.interpret import option_users

    for dest, (flag, title, default) in args.option_flags.items():
        if getattr(args, dest) == default:
            continue
        users = option_users(title, dest)
        if not set(users) & set(methods):
            shown = ", ".join(users[:6]) + (", ..." if len(users) > 6 else "")
            raise ConfigError(f"{flag} is read only by {shown}; none of the chosen methods ({', '.join(methods)}) "
                              "uses it")
    if set(methods) == {"baseline"}:
        for flag, value, default in (("--alpha", args.alpha, 1.0), ("--warmup-epochs", args.warmup_epochs, 0.0)):
            if value != default:
                raise ConfigError(f"{flag} applies to L_int, which the baseline does not have; choose a UIMER "
                                  "--method or drop the flag")


def train_specs(args) -> tuple[list[tuple[str, object]], object]:
    """The run specification of each `--method` of a `uimer train` command (validated), and the preset that
    `auto` resolved to (None without auto)."""
    import dataclasses

    from uimer.interpret import options_for
    from uimer.training.runner import RunSpec, check_device
    from uimer.training.trainer import TrainConfig

    if len(set(args.method)) != len(args.method):
        raise ConfigError(f"--method: {next(m for m in args.method if args.method.count(m) > 1)} is given twice")
    preset, auto_train, auto_options = _apply_auto(args) if "auto" in args.method else (None, {}, {})
    check_method_flags(args, [preset.method if m == "auto" else m for m in args.method])
    seeds = _parse_seeds(args.seeds)
    # The method flags given (the others are None; the method fills in its defaults): a run records the ones its
    # method reads, as a grid cell records what it sets, so the same settings give the same fingerprint.
    options = {dest: getattr(args, dest) for dest in args.option_flags if getattr(args, dest) is not None}
    config = TrainConfig(
        lr=args.lr, batch_size=args.batch_size, max_epochs=args.max_epochs, patience=args.patience,
        alpha=args.alpha, warmup_epochs=args.warmup_epochs, weight_decay=args.weight_decay,
        eval_batch_size=args.eval_batch_size, device=check_device(args.device), precision=args.precision,
        method_options=options,
    )
    specs = []
    for method in args.method:
        out = Path(args.output_dir) / method if len(args.method) > 1 else Path(args.output_dir)
        method_config, name = config, method
        if method == "auto":
            name = preset.method
            method_config = dataclasses.replace(config, **auto_train,
                                                method_options={**options, **auto_options})
        method_config = dataclasses.replace(method_config,
                                            method_options=options_for(name, method_config.method_options))
        spec = RunSpec(
            task=args.task, method=name, encoder=args.encoder, shot=args.shot, train_size=args.train_size,
            seeds=seeds, data_dir=args.data_dir, output_dir=str(out), dev_size=args.dev_size,
            max_length=args.max_length, pooling=args.pooling, save_model=args.save_model,
            rationale_file=args.rationale_file, config=method_config, strict=args.strict,
        )
        spec.validate()  # every method's spec before the first one trains
        specs.append((method, spec))
    return specs, preset


def cmd_train(args) -> int:
    from rich.console import Console

    from uimer.experiments.tables import results_table
    from uimer.training.runner import run_experiment

    specs, preset = train_specs(args)
    summaries = []
    for method, spec in specs:
        summary = run_experiment(spec, progress=not args.no_progress, overwrite=args.overwrite)
        if method == "auto":  # results.json says that (and why) this run's values came from the preset
            from uimer.atomic import write_json_atomic

            summary["preset"] = {"kind": preset.kind, "method": preset.method, "source": preset.source}
            write_json_atomic(Path(spec.output_dir) / "results.json", summary)
        summaries.append(summary)
    console = Console() if sys.stdout.isatty() else Console(width=140)
    console.print(results_table(summaries, title="test score at the best dev epoch (%)"))
    return 0


def add_predict_parser(subparsers) -> None:
    p = subparsers.add_parser("predict", help="label sentences with a saved model")
    p.add_argument("--model", required=True, help="a directory written by `uimer train --save-model`")
    p.add_argument("sentences", nargs="*", help="sentences (whitespace-tokenised); '-' reads lines from stdin")
    p.add_argument("--pair", action="append", help="hypothesis for each sentence (pair tasks)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    import json

    import torch

    from uimer.data.encoding import encode_examples
    from uimer.data.types import Example, TaskKind
    from uimer.models.task_model import TaskModel

    sentences = list(args.sentences)
    if sentences == ["-"] or not sentences:
        sentences = [line.strip() for line in sys.stdin if line.strip()]
    from uimer.training.runner import check_device

    device = torch.device(check_device(args.device))
    model, tokenizer, info = TaskModel.load(Path(args.model))
    model.to(device).eval()
    kind, labels = TaskKind(info["kind"]), info["labels"]
    pairs = args.pair or []
    if kind is TaskKind.PAIR and len(pairs) != len(sentences):
        raise UimerError("pair models need one --pair hypothesis per sentence")
    examples = [
        Example(words=s.split(), label=0, tags=[0] * len(s.split()) if kind is TaskKind.TAGGING else None,
                pair_words=pairs[i].split() if kind is TaskKind.PAIR else None)
        for i, s in enumerate(sentences)
    ]
    split = encode_examples(examples, tokenizer, kind)
    with torch.inference_mode():
        for batch in split.batches(64):
            batch = batch.to(device)
            logits = model(batch)
            for i, pred in zip(batch.index.tolist(), model.predict(logits, batch), strict=True):
                words = examples[i].words
                if kind is TaskKind.TAGGING:
                    tags = ["O"] * len(words)
                    for w, t in zip(split.encoded[i].kept_words.tolist(), pred, strict=False):
                        tags[w] = labels[t]
                    print(json.dumps({"sentence": " ".join(words), "tags": tags}))
                else:
                    probs = torch.softmax(logits[batch.index.tolist().index(i)], -1)
                    print(json.dumps({"sentence": " ".join(words), "label": labels[pred],
                                      "probability": round(float(probs[pred]), 4)}))
    return 0


def add_export_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="write a saved uimer classifier as a plain transformers model",
        description="Write a classifier saved by `uimer train --save-model` as a BertForSequenceClassification "
                    "(save_pretrained: model + tokenizer + label names) that AutoModelForSequenceClassification"
                    ".from_pretrained(OUT) loads and that predicts the same labels. Needs --pooling cls and a "
                    "BERT-type encoder (MiniLM is one); the CRF tagger has no transformers class (see the README).")
    p.add_argument("--model", required=True, help="a directory written by `uimer train --save-model` "
                                                  "(DIR/models/seedS)")
    p.add_argument("--out", required=True, help="the directory to write (created; must be empty or new)")
    p.add_argument("--pooler-scale", type=float, default=None,
                   help="scale s of the near-identity pooler (default 1e-4; see uimer.models.export)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    import json

    from uimer.models.export import DEFAULT_POOLER_SCALE, export_saved_model

    model_dir, out = Path(args.model).expanduser(), Path(args.out).expanduser()
    if not (model_dir / "uimer-model.json").is_file():
        raise UimerError(f"--model {model_dir}: not a saved uimer model (no uimer-model.json); train one with "
                         "`uimer train ... --save-model` and give DIR/models/seedS")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not args.overwrite)):
        raise UimerError(f"--out {out}: exists and is not an empty directory; choose another or add --overwrite")
    scale = DEFAULT_POOLER_SCALE if args.pooler_scale is None else args.pooler_scale
    written = export_saved_model(model_dir, out, pooler_scale=scale)
    print(json.dumps({"exported": str(written), "from": str(model_dir),
                      "load": f"AutoModelForSequenceClassification.from_pretrained({str(written)!r})"}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="uimer", description=__doc__)
    parser.add_argument("--version", action="version", version="uimer " + __import__("uimer").__version__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_train_parser(subparsers)
    add_predict_parser(subparsers)
    add_export_parser(subparsers)
    from uimer.data.cli import register as register_data
    from uimer.evaluation.cli import register as register_evaluation
    from uimer.experiments.cli import register as register_experiments
    from uimer.training.mlm import register_mlm_cli

    register_data(subparsers)
    register_evaluation(subparsers)
    register_experiments(subparsers)
    register_mlm_cli(subparsers)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """UimerWarnings are for users: one line, no source location."""
    if issubclass(category, UimerWarning):
        print(f"uimer: warning: {message}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        return int(args.func(args) or 0)
    except UimerError as err:
        from uimer.interpret.options import OptionError

        message = err.for_flags() if isinstance(err, OptionError) else str(err)  # the CLI names its flags
        print(f"uimer: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("uimer: interrupted; finished seeds are kept and a rerun resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
