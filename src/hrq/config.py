"""Pipeline configuration: the paper's protocol, a preset merged over it, schema validation.

``config.yaml`` holds the protocol at the top level and named presets under ``presets:``.
:func:`resolve_config` deep-merges the selected preset over the protocol and validates the
result against ``workflow/schemas/config.schema.yaml``; errors name the offending key
(``hierarchy.grid.k[0]: 0 is less than the minimum of 1``) and, for a bad preset, the choices.

Cross-field rules the schema cannot say (every listed dataset is defined, ``compare`` names
two configured methods, ...) are checked here too, with the same key-path messages.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import jsonschema
import yaml

from hrq.grid import codebook_label

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
CONFIG_PATH = REPO_ROOT / "config.yaml"


class ConfigError(ValueError):
    """A config value is missing or invalid; the message names the key."""


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in: nested mappings merge, everything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _key_path(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def load_schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _message(error: jsonschema.ValidationError) -> str:
    """The schema's message, except for a key outside a closed set of keys (a dataset kind's),
    which jsonschema words as "'zipp' is not one of [...]"."""
    if "propertyNames" in error.schema_path and error.validator == "enum":
        return f"unknown key {error.instance!r}; this entry takes {', '.join(map(str, error.validator_value))}"
    return error.message


def validate_config(config: Mapping[str, Any], typed: Mapping[str, str] | None = None) -> None:
    """Raise :class:`ConfigError` listing every schema violation with its key path (and, for a
    key given on the command line, the user's ``--config`` text from ``typed``)."""
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        typed = typed or {}

        def given(error) -> str:
            top = next(iter(error.absolute_path), None)
            return f" (you gave --config {typed[top]})" if top in typed else ""

        lines = [f"  {_key_path(e.absolute_path)}: {_message(e)}{given(e)}" for e in errors]
        raise ConfigError("invalid config:\n" + "\n".join(lines))
    _check_references(config)


def _check_references(config: Mapping[str, Any]) -> None:
    problems = []
    for task in ("hierarchy", "recommendation"):
        section = config[task]
        for i, name in enumerate(section["datasets"]):
            if name not in config["datasets"]:
                problems.append(f"  {task}.datasets[{i}]: dataset {name!r} is not defined under "
                                f"'datasets' (defined: {sorted(config['datasets'])})")
        for i, name in enumerate(section["compare"]):
            if name not in section["methods"]:
                problems.append(f"  {task}.compare[{i}]: method {name!r} is not one of "
                                f"{task}.methods {sorted(section['methods'])}")
        labels = {}
        for i, sizes in enumerate(section["grid"]["s"]):
            label = codebook_label(sizes)
            if label in labels:
                problems.append(f"  {task}.grid.s[{i}]: {sizes} is the same codebook strategy as "
                                f"{task}.grid.s[{labels[label]}]")
            labels.setdefault(label, i)
            if isinstance(sizes, list) and set(section["grid"]["k"]) != {len(sizes)}:
                problems.append(f"  {task}.grid.s[{i}]: {sizes} has {len(sizes)} levels, but "
                                f"{task}.grid.k is {section['grid']['k']}")
    fig1 = config["hierarchy"]["figure1"]
    for key in ("k", "s"):
        if config["hierarchy"]["datasets"] and fig1[key] not in config["hierarchy"]["grid"][key]:
            problems.append(f"  hierarchy.figure1.{key}: {fig1[key]} is not in hierarchy.grid.{key} "
                            f"{config['hierarchy']['grid'][key]}")
    fig4 = config["recommendation"]["figure4"]["dataset"]
    if fig4 not in config["datasets"]:
        problems.append(f"  recommendation.figure4.dataset: dataset {fig4!r} is not defined under 'datasets'")
    rec = config["recommendation"]
    if rec["embedding"]["backend"] == "taxonomy":
        for name in [*rec["datasets"], fig4]:
            kind = config["datasets"].get(name, {}).get("kind")
            if kind not in (None, "synthetic_catalog"):
                problems.append(f"  recommendation.embedding.backend: 'taxonomy' embeds only synthetic_catalog "
                                f"datasets, but {name!r} is {kind!r}; use sentence-transformers")
    for name, spec in config["datasets"].items():
        if spec.get("min_length", 0) > spec.get("max_length", 10**9):
            problems.append(f"  datasets.{name}.min_length: {spec['min_length']} exceeds max_length "
                            f"{spec['max_length']}")
    if problems:
        raise ConfigError("invalid config:\n" + "\n".join(problems))


def _preset_chain(presets: Mapping[str, Any], preset: str) -> list[str]:
    """``preset`` and the presets it ``extends``, base first (a preset may build on another,
    e.g. ``related_demo`` is ``demo`` plus the related quantizers)."""
    chain: list[str] = []
    name: str | None = preset
    while name is not None:
        if name in chain:
            raise ConfigError(f"invalid config:\n  presets.{chain[-1]}.extends: cycle {' -> '.join([*chain, name])}")
        if name not in presets:
            raise ConfigError(f"invalid config:\n  presets.{chain[-1]}.extends: {name!r} is not a defined preset")
        values = presets[name] or {}
        if not isinstance(values, Mapping):
            raise ConfigError(f"invalid config:\n  presets.{name}: must be a mapping of overrides")
        for key in ("preset", "presets"):
            if key in values:
                raise ConfigError(f"invalid config:\n  presets.{name}.{key}: a preset cannot set {key!r}")
        chain.append(name)
        name = values.get("extends")
    return chain[::-1]


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def typed_value(value: Any) -> Any:
    """A ``--config`` value with the types the user meant.

    Snakemake parses a top-level ``--config key=value`` as int, float or bool, but the items of
    a list or mapping (``seeds=[0,1]``, ``hierarchy='{grid: {h: [8]}}'``) stay strings (YAML's
    BaseLoader), which the schema then rejects. Strings that spell a number, a bool or null
    become one; everything else stays as typed."""
    if isinstance(value, Mapping):
        return {k: typed_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [typed_value(v) for v in value]
    if isinstance(value, str):
        if _NUMBER.fullmatch(value):
            return int(value) if re.fullmatch(r"[+-]?\d+", value) else float(value)
        lowered = value.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if lowered in ("null", "~", "none"):
            return None
    return value


def command_line_texts(argv: Sequence[str]) -> dict[str, str]:
    """``{key: "key=value"}`` of the ``--config`` entries in a command line, as typed, so a
    config error can show the user's own words."""
    texts, in_config = {}, False
    for arg in argv:
        if arg in ("--config", "-C"):
            in_config = True
        elif arg.startswith("-"):
            in_config = False
        elif in_config and "=" in arg:
            texts[arg.split("=", 1)[0]] = arg
    return texts


def resolve_config(config: Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
                   command_line: Mapping[str, Any] | None = None,
                   command_line_text: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Merge ``config['presets'][config['preset']]`` over ``config``, then ``overrides`` (the
    user's ``--configfile``/``--config`` values, which therefore beat the preset), and validate.

    ``command_line``: the ``--config`` values alone (Snakemake's ``config_settings.config``);
    their string items are given their types (:func:`typed_value`) and they win over
    ``overrides``. ``command_line_text``: ``{key: "key=value"}`` as the user typed them
    (:func:`command_line_texts`), quoted in errors about those keys.

    The returned dict keeps ``preset`` and ``presets`` so it can be validated again; the
    stages read only the merged top-level sections.
    """
    if command_line:
        overrides = deep_merge(overrides or {}, {k: typed_value(v) for k, v in command_line.items()})
    if not isinstance(config, Mapping):
        raise ConfigError(f"config must be a mapping, got {type(config).__name__}")
    presets = config.get("presets") or {}
    preset = config.get("preset")
    if preset not in presets:
        raise ConfigError(f"invalid config:\n  preset: {preset!r} is not a defined preset; "
                          f"choose one of {sorted(presets)} or add it under 'presets'")
    merged = dict(config)
    for name in _preset_chain(presets, preset):
        merged = deep_merge(merged, {k: v for k, v in (presets[name] or {}).items() if k != "extends"})
    user = {k: v for k, v in (overrides or {}).items() if k not in ("preset", "presets")}
    merged = deep_merge(merged, user)
    validate_config(merged, command_line_text)
    return merged


def load_config(path: str | Path = CONFIG_PATH, **overrides: Any) -> dict[str, Any]:
    """Read a YAML config file and resolve it as Snakemake does with ``--config key=value ...``:
    ``overrides`` (e.g. ``preset="paper"``) select the preset and win over its values."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    return resolve_config(deep_merge(raw or {}, overrides), overrides)


def uses_gpu(config: Mapping[str, Any]) -> bool:
    """Whether training jobs will run on CUDA: ``device: cuda``, or ``auto`` with a visible GPU.

    For ``auto`` this is the cheap test the scheduler needs (an NVIDIA driver is installed and
    ``CUDA_VISIBLE_DEVICES`` does not hide every GPU) rather than importing torch, which would
    cost every Snakemake start-up seconds; the jobs themselves decide with
    ``torch.cuda.is_available()``.
    """
    if config["device"] in ("cuda", "cpu"):
        return config["device"] == "cuda"
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia/gpus").is_dir()
