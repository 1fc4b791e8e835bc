"""The typed config. YAML files and `--set key=value` overrides are two views of it.

base.py     Group (unknown keys refused), MethodGroup, RunRoot (the keys of every run), errors as one line
groups.py   the groups beside the method: data, models, cache, tune, generate
methods.py  the keys of each way of distilling, one model per method.kind (below the recipes that run them)
roots.py    one root per task (`task: classify | lm`), each a union of its method kinds on `kind`
load.py     YAML read safely, overrides applied, validated into the task's root
"""

from distill.config.base import NAME, Group, MethodGroup, RunRoot, describe_error
from distill.config.groups import ModelConfig, TeacherConfig, TermConfig
from distill.config.load import apply_override, load_config, read_saved, read_with_overrides, read_yaml, validate
from distill.config.roots import ROOTS, ClassifyConfig, Config, LMConfig

__all__ = [
    "NAME",
    "ROOTS",
    "ClassifyConfig",
    "Config",
    "Group",
    "LMConfig",
    "MethodGroup",
    "ModelConfig",
    "RunRoot",
    "TeacherConfig",
    "TermConfig",
    "apply_override",
    "describe_error",
    "load_config",
    "read_saved",
    "read_with_overrides",
    "read_yaml",
    "validate",
]
