"""A config read from YAML, with `--set key=value` overrides, validated into its task's root: every problem is
one ConfigError that names the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from distill._io import existing
from distill.config.base import describe_error
from distill.config.roots import METHODS, ROOTS, Config
from distill.errors import ConfigError
from distill.registry import did_you_mean

MOVED = {
    "distill": "terms and label_smoothing are keys",
    "stages": "stages is a key",
    "assistant": "assistant is a key",
}


def _describe(error: dict, root: type) -> str:
    """One line for a validation error. Inside `method` pydantic puts the kind into the error's location
    (method.online.stages): it is taken out, and a key the kind does not have is named with the kind."""
    loc = error["loc"]
    if loc[:1] == ("method",) and len(loc) > 1 and loc[1] in METHODS:
        kind, inner = loc[1], {**error, "loc": loc[2:]}
        method = METHODS[kind]
        if error["type"] == "extra_forbidden" and len(loc) == 3:
            keys = ", ".join(method.model_fields)
            close = did_you_mean(str(loc[2]), list(method.model_fields))
            return f"method.{loc[2]}: not a key of method.kind '{kind}'{close}; its keys: {keys}"
        return describe_error(inner, method, prefix="method")
    if error["type"] in ("union_tag_not_found", "union_tag_invalid"):
        given = f"'{error['input'].get('kind')}' is not" if error["type"] == "union_tag_invalid" else "missing; give"
        kinds = sorted(method.model_fields["kind"].default for method in root.kinds)
        return f"method.kind: {given} one of {', '.join(kinds)}"
    if error["type"] == "extra_forbidden" and len(loc) == 1 and (loc[0] in METHODS or loc[0] in MOVED):
        if loc[0] in METHODS:
            return f"{loc[0]}: unknown key; the way of distilling is chosen as method: {{kind: {loc[0]}, ...}}"
        return f"{loc[0]}: unknown key; {MOVED[loc[0]]} of method (kind: offline)"
    return describe_error(error, root)


def validate(raw: dict[str, Any], source: str) -> Config:
    """`raw` as the root of its task, or one ConfigError from `source`: its first problem, worded."""
    task = raw.get("task", "classify")
    if task not in ROOTS:
        raise ConfigError(f"{source}: task: '{task}' is not one of {', '.join(ROOTS)}")
    root = ROOTS[task]
    try:
        return root.model_validate(raw)
    except ValidationError as e:
        # a misspelt key first: it usually explains the "missing" error beside it
        errors = sorted(e.errors(), key=lambda error: error["type"] != "extra_forbidden")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {_describe(errors[0], root)}{more}") from None


def read_saved(path: Path) -> Config:
    """The resolved config a run saved: every group written out, so one missing means the file is damaged or
    was not written by distill (a saved config must not fall back on defaults)."""
    raw = read_yaml(path)
    if "task" not in raw:
        raise ConfigError(f"{path}: made by an earlier version of distill (no 'task' key); train the run again")
    missing = [key for key in ROOTS.get(raw["task"], ROOTS["classify"]).model_fields if key not in raw]
    if missing:
        raise ConfigError(f"{path}: no '{missing[0]}' key; the file is damaged or was not written by distill train")
    return validate(raw, str(path))


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `key.sub=value` to the raw mapping; the value is parsed as YAML (5, 0.1, true, [1, 2])."""
    key, sep, text = assignment.partition("=")
    if not sep or not all(key.split(".")):
        raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. --set train.epochs=5")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    *parents, leaf = key.split(".")
    node: Any = raw
    for depth, part in enumerate(parents):
        node = _step(node, part, ".".join(parents[:depth]), key)
    if isinstance(node, list):
        _check_index(node, leaf, ".".join(parents), key)
        node[int(leaf)] = value
    elif isinstance(node, dict):
        node[leaf] = value
    else:
        raise ConfigError(f"--set {key}: {'.'.join(parents)} is a value, not a group")


def _step(node: Any, part: str, where: str, key: str) -> Any:
    """One level down from `node` (a group or a list) for `--set key`; groups are made as needed."""
    if isinstance(node, list):
        _check_index(node, part, where, key)
        return node[int(part)]  # method.stages.0.epochs, method.terms.1.weight
    if not isinstance(node, dict):
        raise ConfigError(f"--set {key}: {where} is a value, not a group")
    if part.isdigit() and part not in node:
        raise ConfigError(f"--set {key}: {where} is not a list in this config; set the whole list, {where}=[...]")
    return node.setdefault(part, {})


def _check_index(items: list, part: str, where: str, key: str) -> None:
    if not part.isdigit() or int(part) >= len(items):
        raise ConfigError(f"--set {key}: {where} has {len(items)} entries; give an index below {len(items)}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (plain YAML keeps the last, silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice in one group", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = existing(path, "a YAML config file", kind="file")
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader: never constructs objects
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; a config is YAML") from None
    groups = "a config is a mapping of groups (task, data, teacher, student, method, train)"
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; {groups}")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {groups}")
    return raw


def read_with_overrides(path: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    """A config file's mapping with each `key=value` of `overrides` applied, before validation."""
    raw = read_yaml(path)
    for assignment in overrides:
        apply_override(raw, assignment)
    return raw


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read, override and validate a config file; any problem is one ConfigError naming the key."""
    return validate(read_with_overrides(path, overrides), str(path))
