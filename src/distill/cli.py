"""The `distill` command.

Exit codes: 0 done; 2 a mistake the user can fix (one line naming the key or file); 1 anything else (out of
memory, an error inside torch or a library, a bug of ours), said to be no configuration problem, with the
traceback under --debug or DISTILL_DEBUG=1; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import NoReturn

import torch.distributed

from distill.config import Config, load_config
from distill.errors import DistillError, first_line
from distill.export import FILES, evaluate_exported, export
from distill.generate import generate as generate_completions
from distill.pipeline import evaluate_run, run
from distill.predict import predict, write_predictions
from distill.report import format_export, format_exported_accuracy, format_result, format_tuning
from distill.report.document import make_report
from distill.tasks import experiment
from distill.tasks.caches import make_cache
from distill.train import parallel
from distill.tune import tune

DEMOS = resources.files("distill") / "demos"  # classify.yaml, lm.yaml


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as the one line every other mistake gets."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"distill: error: {message}; see `{self.prog} --help`\n")


def _add_overrides(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=5 (repeatable)",
    )


def _talk(parser: argparse.ArgumentParser, default: object) -> None:
    """-q, -v and --debug, before the command or after it (`default` SUPPRESS there, so neither place resets
    the other)."""
    talk = parser.add_mutually_exclusive_group()
    talk.add_argument("-q", "--quiet", action="store_true", default=default, help="only warnings, errors, the result")
    talk.add_argument("-v", "--verbose", action="store_true", default=default, help="also debugging messages")
    parser.add_argument("--debug", action="store_true", default=default, help="show an internal error's traceback")


def _config(command: argparse.ArgumentParser, what: str = "YAML config file") -> None:
    command.add_argument("config", help=what)
    _add_overrides(command)


def _run_dir(command: argparse.ArgumentParser) -> None:
    command.add_argument("run_dir", help="a run directory made by `distill train` or `distill demo`")


def _train_args(train: argparse.ArgumentParser) -> None:
    _config(train)
    train.add_argument("--resume", action="store_true", help="continue the run in out_dir/name where it stopped")


def _tune_args(tune: argparse.ArgumentParser) -> None:
    _config(tune, "YAML config file (method.kind offline or token; its tune group is the search space)")
    tune.add_argument("--trials", type=int, default=20, help="trials in all, counting those a killed search finished")


def _demo_args(demo: argparse.ArgumentParser) -> None:
    tasks = "classify: an MLP student on 8x8 digits; lm: a character GPT on the standard library's source"
    demo.add_argument("--task", choices=["classify", "lm"], default="classify", help=tasks)
    _add_overrides(demo)


def _eval_args(evaluate: argparse.ArgumentParser) -> None:
    what = "a run directory, or what `distill export` wrote: a .onnx, .pt2 or .pt file, or a model folder"
    evaluate.add_argument("run_dir", metavar="RUN_DIR|EXPORTED", help=what)
    rows = "also write each model's class for every test row to FILE (CSV; a run directory only)"
    evaluate.add_argument("--predictions", metavar="FILE", help=rows)


def _export_args(export: argparse.ArgumentParser) -> None:
    _run_dir(export)
    export.add_argument("--format", dest="fmt", choices=list(FILES), default="onnx", help="default: onnx")
    atol = "largest logit difference from PyTorch accepted (default 1e-4)"
    export.add_argument("--atol", type=float, default=1e-4, help=atol)
    int8 = "also quantise to int8 with ONNX Runtime (dynamic; static for conv nets)"
    export.add_argument("--int8", action="store_true", help=int8)


def _predict_args(predict: argparse.ArgumentParser) -> None:
    model = "a run directory (its student, or --model), or a .onnx, .pt2 or .pt file `distill export` wrote"
    predict.add_argument("model", metavar="MODEL", help=model)
    inputs = "image files or folders of them (any depth), or CSV files of a table model's feature columns"
    predict.add_argument("inputs", metavar="INPUTS", nargs="+", help=inputs)
    predict.add_argument("--model", dest="name", metavar="NAME", help="a run's model other than the student: teacher")
    predict.add_argument("--top-k", type=int, default=3, help="the most probable classes shown (default 3)")
    predict.add_argument("--json", action="store_true", help='a JSON list of {"input", "top": [{"class", ...}]}')


ARGUMENTS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "train": ("run an experiment from a YAML config", _train_args),
    "cache": ("run the teacher once and store its outputs in teacher.cache", _config),
    "tune": ("search the loss, temperature, alpha and lr on the validation split", _tune_args),
    "demo": ("teacher, scratch and distilled student on the bundled digits (or --task lm)", _demo_args),
    "eval": ("re-measure the models of a finished run, or what `distill export` wrote", _eval_args),
    "generate": ("the teacher's completions of a JSONL file's prompts (task: lm configs)", _config),
    "report": ("report.html and report.md of a finished run: curves, samples or calibration, payoff", _run_dir),
    "export": ("the student out of PyTorch, checked against it on the test inputs", _export_args),
    "predict": (
        "a classifier's top classes for image files or CSV rows, prepared as its evaluation was",
        _predict_args,
    ),
}


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="distill", description="Knowledge distillation: teacher -> student.")
    _talk(parser, False)
    options = _Parser(add_help=False)
    _talk(options, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (what, arguments) in ARGUMENTS.items():
        arguments(commands.add_parser(name, parents=[options], help=what))
    return parser


class _Below(logging.Filter):
    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def _setup_logging(args: argparse.Namespace) -> None:
    """The library logs under `distill`; the command shows its progress as plain lines on stdout and its
    warnings on stderr, as `distill: ...`. Set up anew by each call of `main`."""
    logger = logging.getLogger("distill")
    for handler in [h for h in logger.handlers if getattr(h, "distill_cli", False)]:
        logger.removeHandler(handler)
    progress, warnings = logging.StreamHandler(sys.stdout), logging.StreamHandler(sys.stderr)
    progress.addFilter(_Below(logging.WARNING))
    progress.setFormatter(logging.Formatter("%(message)s"))
    warnings.setLevel(logging.WARNING)
    warnings.setFormatter(logging.Formatter("distill: %(message)s"))
    for handler in (progress, warnings):
        handler.distill_cli = True
        logger.addHandler(handler)
    quiet = args.quiet or not parallel.first_process()  # the other processes of a parallel run: warnings only
    logger.setLevel(logging.WARNING if quiet else logging.DEBUG if args.verbose else logging.INFO)


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def _train(args: argparse.Namespace) -> None:
    cfg = _load(args)
    with parallel.session(cfg.train.device):
        summary = run(cfg, resume=args.resume)
    if summary:  # else another process of a parallel run prints it
        print(format_result(summary))


def _demo(args: argparse.Namespace) -> None:
    with resources.as_file(DEMOS / f"{args.task}.yaml") as path:
        cfg = load_config(path, args.overrides)
    print(format_result(run(cfg, overwrite=True)))
    print(_demo_report(cfg.run_dir))


def _cache(args: argparse.Namespace) -> None:
    cfg = _load(args)
    if cfg.task == "lm" and parallel.launched():
        raise DistillError("distill cache of a language model runs in one process: start it without torchrun")
    with parallel.session(cfg.train.device):
        made = make_cache(experiment(cfg))
    if not made:  # another process of a parallel run reports
        return
    unit = "tokens" if cfg.task == "lm" else "samples"
    print(
        f"cached the teacher's outputs for {made[unit]} {unit} in {made['seconds']:.1f} s: "
        f"{made[f'bytes_per_{unit[:-1]}']:.0f} bytes per {unit[:-1]}, {made['bytes'] / 2**20:.1f} MB in {made['path']}"
    )


def _tune(args: argparse.Namespace) -> None:
    if args.trials < 1:
        raise DistillError(f"--trials must be at least 1, got {args.trials}")
    print(format_tuning(tune(_load(args), args.trials)))


def _eval(args: argparse.Namespace) -> None:
    """A run folder (it has config.yaml) is re-measured; anything else is taken for what `distill export` wrote:
    a file, or a Hugging Face student's folder."""
    if (Path(args.run_dir) / "config.yaml").is_file():
        print(format_result(evaluate_run(args.run_dir)))
    elif args.predictions:
        raise DistillError(f"--predictions takes a run directory; {args.run_dir} is not one (no config.yaml)")
    else:
        print(format_exported_accuracy(evaluate_exported(args.run_dir)))
    if args.predictions:
        wrote = write_predictions(args.run_dir, args.predictions)
        models = ", ".join(wrote["models"])
        print(f"wrote each test row's class by {models} ({wrote['rows']} rows) to {wrote['file']}")


def _generate(args: argparse.Namespace) -> None:
    cfg = _load(args)
    if cfg.task != "lm":
        raise DistillError(f"{args.config}: distill generate takes a task: lm config")
    made = generate_completions(cfg)
    earlier = f" ({made['already']} were there from an earlier run)" if made["already"] else ""
    print(f"wrote {made['written']} completions to {made['output']} in {made['seconds']:.1f} s{earlier}")


def _report(args: argparse.Namespace) -> None:
    print(_wrote(make_report(args.run_dir)))


def _export(args: argparse.Namespace) -> None:
    print(format_export(export(args.run_dir, fmt=args.fmt, atol=args.atol, int8=args.int8)))


def _predict(args: argparse.Namespace) -> None:
    """Printed as the batches come: a line per input, or one JSON list."""
    names, predictions = predict(args.model, args.inputs, name=args.name, top_k=args.top_k)
    if args.json:
        for i, prediction in enumerate(predictions):
            print("[\n  " if i == 0 else ",\n  ", json.dumps(prediction.to_dict()), sep="", end="", flush=True)
        print("\n]")
        return
    width = max(map(len, names))
    for prediction in predictions:
        top = "  ".join(f"{name} ({probability:.3f})" for name, probability in prediction.top)
        print(f"{prediction.input:<{width}}  {top}", flush=True)


COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "train": _train,
    "cache": _cache,
    "tune": _tune,
    "demo": _demo,
    "eval": _eval,
    "generate": _generate,
    "report": _report,
    "export": _export,
    "predict": _predict,
}
PARALLEL = ("train", "cache")  # the commands a torchrun launch may start


def _main(args: argparse.Namespace) -> None:
    if args.quiet and "overrides" in vars(args):  # a command that trains
        args.overrides.append("train.progress=false")  # quiet means no progress bar either
    if parallel.launched() and args.command not in PARALLEL:
        raise DistillError(f"distill {args.command} runs in one process: start it without torchrun")
    COMMANDS[args.command](args)


def _wrote(paths: dict[str, Path]) -> str:
    return f"wrote {paths['html']} (open it in a browser) and {paths['markdown']} with its plots in {paths['figures']}"


def _demo_report(run_dir: Path) -> str:
    """The demo's last line: where its report is, or how to get one."""
    if importlib.util.find_spec("matplotlib") is None:
        return f"report: pip install 'distill[report]', then distill report {run_dir}"
    return "report: " + _wrote(make_report(run_dir))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args)
    try:
        _main(args)
    except DistillError as e:
        print(f"distill: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a path that cannot be written, a full disk: the one line the OS gives, no traceback
        print(f"distill: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except torch.distributed.DistError as e:  # a peer died or hung: what is on disk is the first process's
        kept = (
            "the cache's finished shards are kept: run `distill cache CONFIG` again"
            if args.command == "cache"
            else "the last complete checkpoint is kept: continue with `distill train CONFIG --resume`, on any "
            "number of processes"
        )
        print(
            f"distill: error: a process of this data-parallel run stopped or stopped answering ({first_line(e)}); "
            f"{kept}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        again = "run the same distill generate again" if args.command == "generate" else "distill train CONFIG --resume"
        print(f"distill: interrupted; continue with `{again}`", file=sys.stderr)
        return 130
    except Exception as e:  # not the user's mistake: say so, and keep the traceback for whoever debugs it
        if args.debug or os.environ.get("DISTILL_DEBUG") == "1":
            traceback.print_exc()
        what = "out of memory" if isinstance(e, MemoryError) or "out of memory" in str(e) else "internal error"
        print(
            f"distill: {what}: {type(e).__name__}: {first_line(e)}\n"
            "  This is not a problem with your configuration. Rerun with --debug (or DISTILL_DEBUG=1) for the "
            "traceback, and report it if it persists.",
            file=sys.stderr,
        )
        return 1
    return 0
