"""Finding and opening a Hugging Face dataset (the `datasets` package): a folder `save_to_disk` wrote, data files
(Parquet, Arrow, CSV, JSON), or a hub dataset the local cache holds; and its own train, validation and test
splits. What a task reads from the rows is its own (`_hf.py`: a classifier's images or features)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from distill.errors import DistillError, first_line

SPLITS = {"train": ("train",), "val": ("validation", "val", "valid", "dev"), "test": ("test",)}  # part: split names
BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json"}
HUB_NAME = re.compile(r"[\w-][\w.-]*(/[\w.-]+)?")  # "mnist", "uoft-cs/cifar10"


def datasets_package() -> Any:
    try:
        import datasets
    except ImportError:
        raise DistillError(
            "reading a Hugging Face dataset (data.name hf) needs the datasets package: pip install 'distill[data]'"
        ) from None
    return datasets


def open_dataset(hf: Any, path: str) -> tuple[Any, str, Path]:
    """The Dataset or DatasetDict at `path`, its name in messages, and the folder relative image paths start from."""
    given = Path(path).expanduser()
    if given.is_dir() and any((given / name).is_file() for name in ("dataset_dict.json", "state.json")):
        return _read(hf, lambda: hf.load_from_disk(str(given)), given), f"hf:{given.resolve()}", given
    if given.exists():
        builder = _builder(given)
        files = {"data_dir": str(given)} if given.is_dir() else {"data_files": str(given)}
        loaded = _read(hf, lambda: hf.load_dataset(builder, **files), given)
        return loaded, f"hf:{given.resolve()}", given if given.is_dir() else given.parent
    if not HUB_NAME.fullmatch(path):
        raise DistillError(
            f"data.path {path} does not exist; expected a folder save_to_disk wrote, data files "
            f"({', '.join(BUILDERS)}), or a hub dataset's name"
        )
    try:
        return hf.load_dataset(path), f"hf:{path}", Path.cwd()
    except (OSError, ValueError, hf.exceptions.DatasetsError) as e:
        if hf.config.HF_HUB_OFFLINE:
            raise DistillError(
                f"data.path {path}: no such file or folder, and no hub dataset of that name in the local Hugging Face "
                "cache (offline mode is on); load it once online to cache it, or give a folder save_to_disk wrote"
            ) from None
        raise DistillError(
            f"data.path {path}: no such file or folder, and the Hub did not give it ({first_line(e)}); check the "
            "name and the network, or give a folder save_to_disk wrote"
        ) from None


def _read(hf: Any, load: Any, path: Path) -> Any:
    try:
        return load()
    except (OSError, ValueError, hf.exceptions.DatasetsError) as e:
        raise DistillError(
            f"{path}: cannot read it as a Hugging Face dataset ({first_line(e, typed=True)}); fix or rewrite it"
        ) from None


def _builder(path: Path) -> str:
    """The `datasets` builder of a data file, or of the one kind of data file a folder holds."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
    kinds = sorted({BUILDERS[p.suffix.lower()] for p in files if p.suffix.lower() in BUILDERS})
    if len(kinds) != 1 or (path.is_file() and path.suffix.lower() not in BUILDERS):
        found = "not a data file" if path.is_file() else "holds no data files"
        found = f"holds {' and '.join(kinds)} files; keep one kind" if len(kinds) > 1 else found
        raise DistillError(
            f"{path}: {found}; data.name hf reads {', '.join(BUILDERS)} files, a folder of them, or a folder "
            "save_to_disk wrote"
        )
    return kinds[0]


def dataset_splits(hf: Any, loaded: Any, source: str) -> dict[str, tuple[str | None, Any]]:
    """{part: (split name, Dataset)} for train, val and test, in that order: a DatasetDict's splits, or a plain
    Dataset (no split name) as the training part."""
    if not isinstance(loaded, hf.DatasetDict):
        return {"train": (None, loaded)}
    if "train" not in loaded:
        raise DistillError(
            f"{source}: no 'train' split (it has {', '.join(loaded) or 'none'}); save the training rows as 'train'"
        )
    found = {part: next((name for name in names if name in loaded), None) for part, names in SPLITS.items()}
    return {part: (name, loaded[name]) for part, name in found.items() if name is not None}


def split_names(hf: Any, loaded: Any, splits: dict[str, tuple[str | None, Any]]) -> str:
    """', splits train/validation/test (extra left out)' for a DatasetDict."""
    if not isinstance(loaded, hf.DatasetDict):
        return ""
    used = [name for name, _ in splits.values()]
    left = [name for name in loaded if name not in used]
    return f", splits {'/'.join(used)}" + (f" ({', '.join(left)} left out)" if left else "")


def joined(hf: Any, splits: list[Any], source: str) -> Any:
    if len(splits) == 1:
        return splits[0]
    try:
        return hf.concatenate_datasets(splits)
    except ValueError as e:
        raise DistillError(
            f"{source}: the splits' columns differ ({first_line(e)}); give them the same features"
        ) from None
