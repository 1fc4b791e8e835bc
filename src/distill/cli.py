"""The `distill` command."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from typing import NoReturn

from distill.config import load_config
from distill.errors import DistillError
from distill.pipeline import evaluate_run, make_cache, run
from distill.report import format_summary

DEMO_CONFIG = resources.files("distill") / "demo.yaml"


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


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="distill", description="Knowledge distillation: teacher -> student.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="run an experiment from a YAML config")
    train.add_argument("config", help="YAML config file")
    _add_overrides(train)
    train.add_argument("--resume", action="store_true", help="continue the run in out_dir/name where it stopped")

    cache = commands.add_parser("cache", help="run the teacher once and store its outputs in teacher.cache")
    cache.add_argument("config", help="YAML config file (with teacher.weights and teacher.cache)")
    _add_overrides(cache)

    demo = commands.add_parser("demo", help="teacher, scratch and distilled student on the bundled digits")
    _add_overrides(demo)

    evaluate = commands.add_parser("eval", help="re-measure the models of a finished run")
    evaluate.add_argument("run_dir", help="a run directory made by `distill train` or `distill demo`")
    return parser


def _main(args: argparse.Namespace) -> None:
    if args.command == "cache":
        made = make_cache(load_config(args.config, args.overrides))
        print(
            f"cached the teacher's outputs for {made['samples']} samples in {made['seconds']:.1f} s: "
            f"{made['bytes_per_sample']:.0f} bytes per sample, {made['bytes'] / 2**20:.1f} MB in {made['path']}"
        )
        return
    if args.command == "train":
        summary = run(load_config(args.config, args.overrides), resume=args.resume)
    elif args.command == "demo":
        with resources.as_file(DEMO_CONFIG) as path:
            cfg = load_config(path, args.overrides)
        summary = run(cfg, overwrite=True)
    else:
        summary = evaluate_run(args.run_dir)
    print(format_summary(summary))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _main(args)
    except DistillError as e:
        print(f"distill: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a path that cannot be written, a full disk: the one line the OS gives, no traceback
        print(f"distill: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("distill: interrupted; continue with `distill train CONFIG --resume`", file=sys.stderr)
        return 130
    return 0
