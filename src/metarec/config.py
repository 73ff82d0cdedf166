"""Experiment configs (TOML): one file says dataset, protocols, models and metrics.

Every table is a pydantic model that forbids unknown keys, so a typo is an error that names the
key, its table and the nearest valid name instead of silently falling back to a default. Model,
protocol and data-loader tables are checked against the signatures of the code that consumes
them (`inspect.signature`), so the config cannot drift from the code.

`load_config` still returns a plain dict (the runner, the benchmarks and the CLI index it); the
typed `ExperimentConfig` is there for code that wants attributes and defaults.
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
import tomllib
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from metarec.distributed.settings import DistributedSettings, SearchParamSettings, SearchSettings
from metarec.errors import ConfigError

DEFAULT_ENCODER: Final = "sentence-transformers"
DEFAULT_TEXT_MODEL: Final = "all-MiniLM-L6-v2"
#: `--set model.x.y=1` reads like the CLI's `--model`; both spellings reach the same table
SECTION_ALIASES = {"model": "models", "protocol": "protocols"}
#: error types raised by this module; their messages are already phrased for a user
_OWN_ERRORS = {"unknown_key", "unknown_name", "missing_table", "model_check"}


# ------------------------------------------------------------------------------------ helpers
def _suggest(word: str, choices: Iterable[str]) -> str:
    """`did you mean 'x'?` for a near miss, else the valid names (so the user never has to grep)."""
    choices = sorted(choices)
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    return f"allowed: {', '.join(choices)}"


def _error(kind: str, message: str, loc: tuple[str | int, ...] = (), value: Any = None) -> ValidationError:
    """A one-line ValidationError at `loc` (relative to the validator raising it); pydantic prefixes
    the outer location when it propagates, so nested tables report their full path."""
    detail: InitErrorDetails = {"type": PydanticCustomError(kind, message), "loc": loc, "input": value}
    return ValidationError.from_exception_data("config", [detail])


def _lift(errors: Iterable[ErrorDetails], prefix: tuple[str | int, ...]) -> list[InitErrorDetails]:
    """Re-raise nested errors under `prefix` (a table name), keeping their type and message."""
    return [
        {"type": PydanticCustomError(e["type"], e["msg"]), "loc": (*prefix, *e["loc"]), "input": e.get("input")}
        for e in errors
    ]


def _missing_table(section: str) -> str:
    if section == "dataset":
        return "no dataset table: add one with source = 'movielens' (or amazon, csv, parquet, synthetic)"
    example = "warm" if section == "protocols" else "popularity"
    return f"no {section}: at least one {section}.<name> table is required (e.g. {section}.{example})"


class _Section(BaseModel):
    """A config table: unknown keys are errors that suggest the nearest valid key."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or cls.model_config.get("extra") == "allow":
            return data
        allowed = set(cls.model_fields)
        details: list[InitErrorDetails] = [
            {"type": PydanticCustomError("unknown_key", _suggest(str(key), allowed)), "loc": (key,), "input": val}
            for key, val in data.items()
            if key not in allowed
        ]
        if details:
            raise ValidationError.from_exception_data(cls.__name__, details)
        return data

    def to_dict(self) -> dict[str, Any]:
        """The keys the config file set, as written (after type coercion); defaults stay with the code."""
        return self.model_dump(exclude_unset=True)


def _type_hints(func: Callable[..., Any]) -> dict[str, Any]:
    """Resolved annotations; one that cannot be resolved (a TYPE_CHECKING-only name) is left out."""
    try:
        return typing.get_type_hints(func)
    except Exception:
        pass
    out: dict[str, Any] = {}
    namespace = getattr(func, "__globals__", {})
    for name, ann in getattr(func, "__annotations__", {}).items():
        try:
            out[name] = eval(ann, namespace) if isinstance(ann, str) else ann  # what get_type_hints does
        except Exception:
            continue
    return out


@functools.cache
def _signature_model(
    func: Callable[..., Any],
    base: type[_Section],
    name: str,
    exclude: frozenset[str] = frozenset(),
    include: frozenset[str] | None = None,
) -> type[_Section]:
    """A table model whose keys are `func`'s keyword parameters (typed by its annotations) added to `base`'s.

    `exclude` names parameters the runner passes itself; `include`, if given, the only ones to take.
    Annotations pydantic cannot check (unresolvable names, exotic types) fall back to `Any`:
    the key is still checked, its value is left to the code.
    """
    hints = _type_hints(func)
    fields: dict[str, Any] = {}
    open_ = False
    for p in inspect.signature(func).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            open_ = True
            continue
        if p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY) or p.name == "self" or p.name in base.model_fields:
            continue
        if p.name in exclude or (include is not None and p.name not in include):
            continue
        fields[p.name] = (hints.get(p.name, Any), ... if p.default is p.empty else p.default)
    try:
        model = create_model(name, __base__=base, __module__=__name__, **fields)
    except Exception:  # pydantic cannot build a schema for some annotation
        loose: dict[str, Any] = {k: (Any, default) for k, (_, default) in fields.items()}
        model = create_model(name, __base__=base, __module__=__name__, **loose)
    if open_:  # **kwargs: any key is accepted, the function decides
        model.model_config["extra"] = "allow"
        model.model_rebuild(force=True)
    return model


def _dotted(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _clean_loc(loc: tuple[str | int, ...], raw: Any, keep_last: bool) -> tuple[str | int, ...]:
    """Drop pydantic's union-member tags (`str`, `list[int]`...) by walking the input along `loc`."""
    out: list[str | int] = []
    node = raw
    for i, part in enumerate(loc):
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_list or (isinstance(node, Mapping) and part in node):
            node = node[part]  # type: ignore[index]
        elif not (keep_last and i == len(loc) - 1):
            continue
        out.append(part)
    return tuple(out)


def _describe(errors: list[ErrorDetails], raw: Mapping[str, Any]) -> list[str]:
    """pydantic's errors, rephrased to name the key path; a union's alternatives share one line."""
    special: list[str] = []
    generic: dict[tuple[str | int, ...], tuple[list[str], Any]] = {}
    for e in errors:
        kind = e["type"]
        loc = _clean_loc(tuple(e["loc"]), raw, keep_last=kind in ("missing", "unknown_key"))
        if kind == "unknown_key":
            where = f"{_dotted(loc[:-1])}: unknown key" if len(loc) > 1 else "unknown top-level key"
            special.append(f"{where} '{loc[-1]}'; {e['msg']}")
        elif kind == "missing" and loc in (("dataset",), ("protocols",), ("models",)):
            special.append(_missing_table(str(loc[0])))
        elif kind == "missing_table":
            special.append(e["msg"])
        elif kind == "missing":
            generic.setdefault(loc, ([], None))[0].append("required key is missing")
        elif kind in _OWN_ERRORS:
            generic.setdefault(loc, ([], None))[0].append(e["msg"])
        else:
            msgs, _ = generic.setdefault(loc, ([], e.get("input")))
            msgs.append(e["msg"][:1].lower() + e["msg"][1:])
    lines = list(dict.fromkeys(special))
    for loc, (msgs, value) in generic.items():
        text = " or ".join(dict.fromkeys(msgs))
        if value is not None:
            got = repr(value)
            text += f" (got {got if len(got) <= 60 else got[:57] + '...'})"
        lines.append(f"{_dotted(loc)}: {text}" if loc else text)
    return lines


# ------------------------------------------------------------------------------------ tables
class DatasetConfig(_Section):
    """[dataset]: `source` picks the loader; the other keys are that loader's plus the cleaning chain's."""

    source: str
    kg_triples: str | None = None  # a knowledge graph for any source: head, relation, tail (CSV / TSV)
    kg_links: str | None = None  # ... and item_id, entity (which entity each item is)

    @model_validator(mode="after")
    def _kg_pair(self) -> DatasetConfig:
        if (self.kg_triples is None) != (self.kg_links is None):
            raise ValueError("kg_triples and kg_links go together: the triples say what is known about entities, "
                             "the links say which entity each item is")  # fmt: skip
        return self


class MovieLensDataset(DatasetConfig):
    source: Literal["movielens"] = "movielens"
    variant: str = "ml-100k"
    path: str | None = None

    @field_validator("variant")
    @classmethod
    def _known_variant(cls, v: str) -> str:
        from metarec.data.sources.movielens import VARIANTS

        if v not in VARIANTS:
            raise PydanticCustomError("unknown_name", f"unknown MovieLens variant '{v}'; {_suggest(v, VARIANTS)}")
        return v


class AmazonDataset(DatasetConfig):
    source: Literal["amazon"] = "amazon"
    path: str
    meta_path: str | None = None
    name: str | None = None


class TabularDataset(DatasetConfig):
    source: Literal["csv", "parquet"]


class SyntheticDataset(DatasetConfig):
    source: Literal["synthetic"] = "synthetic"


def dataset_model(source: str) -> type[DatasetConfig]:
    """The table model for one `source`: hand-written keys for movielens / amazon (which
    `load_dataset` picks one by one), the loader's signature for the others, plus CLEAN_KEYS."""
    from metarec.data.clean import clean
    from metarec.data.sources import CLEAN_KEYS, synthetic, tabular

    base: type[DatasetConfig]
    loader: Callable[..., Any] | None = None
    if source == "movielens":
        base = MovieLensDataset
    elif source == "amazon":
        base = AmazonDataset
    elif source in ("csv", "parquet"):
        base, loader = TabularDataset, tabular.load
    else:
        base, loader = SyntheticDataset, synthetic.make
    model = _signature_model(clean, base, base.__name__, include=frozenset(CLEAN_KEYS))
    if loader is not None:
        model = _signature_model(loader, model, base.__name__)
    return typing.cast(type[DatasetConfig], model)


class TextConfig(_Section):
    """[text]: the encoder content and meta models share (see `metarec.text.encoders.build_encoder`)."""

    encoder: Literal["sentence-transformers", "st", "hf", "causal-lm", "tfidf"] = DEFAULT_ENCODER
    model: str = DEFAULT_TEXT_MODEL
    pooling: Literal["mean", "max", "cls"] = "mean"  # hf / causal-lm (mean, max)
    max_features: Annotated[int, Field(ge=1)] = 4096  # tfidf only
    threads: Annotated[int, Field(ge=1)] | None = None
    device: str = "cpu"
    layer: int | None = None  # causal-lm: which hidden layer (default: the middle one)
    max_length: Annotated[int, Field(ge=1)] | None = None  # hf / causal-lm: tokens read per text (256 / 64)
    adapter: str | None = None  # a LoRA adapter (directory or fingerprint) from `metarec llm tune`


class TuneSection(_Section):
    """[tune]: what `metarec llm tune` trains (LoRA settings: `metarec.text.tuning.TuneConfig`)."""

    model_config = ConfigDict(extra="allow")  # the LoRA keys, checked by TuneConfig below
    template: str = "{title}"

    @model_validator(mode="before")
    @classmethod
    def _lora(cls, value: Any) -> Any:
        from metarec.text.tuning import TuneConfig

        if isinstance(value, Mapping):
            try:
                TuneConfig(**{k: v for k, v in value.items() if k != "template"})
            except ValidationError as exc:
                first = exc.errors()[0]
                raise ValueError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        return value


class ProtocolConfig(_Section):
    """[protocols.<name>]: `type` (default: the table name) picks the split; the other keys are
    that split function's keyword arguments (seed excepted: the runner passes it)."""

    type: str | None = None


class ModelConfig(_Section):
    """[models.<name>]: `type` (default: the table name) picks a `REGISTRY` class; the other keys
    are its constructor's, plus `seed` and `artifact` (a trained model directory, scored as is)."""

    type: str | None = None
    seed: int | None = None
    artifact: str | None = None


class ArtifactModel(ModelConfig):
    """A table that only points at a trained model directory (the runner needs no type for it)."""

    artifact: str


def protocol_model(kind: str) -> type[ProtocolConfig]:
    """The table model of protocol `kind`, from its split function's signature."""
    from metarec.data import splits

    func = getattr(splits, kind.replace("-", "_"))
    first = next(iter(inspect.signature(func).parameters))  # the dataset
    model = _signature_model(func, ProtocolConfig, f"{func.__name__}_protocol", frozenset({first, "seed"}))
    return typing.cast(type[ProtocolConfig], model)


def model_model(kind: str) -> type[ModelConfig]:
    """The table model of model `kind`, from its class's `__init__` (read now, never hard-coded)."""
    from metarec.models import REGISTRY

    cls = REGISTRY[kind]
    return typing.cast(type[ModelConfig], _signature_model(cls.__init__, ModelConfig, f"{cls.__name__}Config"))


def _tables(section: str, value: Any, pick: Callable[[str, dict[str, Any]], type[_Section]]) -> dict[str, _Section]:
    """Validate every `<section>.<name>` table with the model `pick` chooses, collecting all errors."""
    if not isinstance(value, Mapping) or not value:
        raise _error("missing_table", _missing_table(section), value=value)
    out: dict[str, _Section] = {}
    errors: list[InitErrorDetails] = []
    for name, table in value.items():
        if not isinstance(table, Mapping):
            errors.append({"type": "dict_type", "loc": (name,), "input": table})
            continue
        try:
            out[name] = pick(name, dict(table)).model_validate(table)
        except ValidationError as exc:
            errors.extend(_lift(exc.errors(), (name,)))
    if errors:
        raise ValidationError.from_exception_data(section, errors)
    return out


def _pick_protocol(name: str, table: dict[str, Any]) -> type[_Section]:
    from metarec.data.splits import PROTOCOLS

    kind = table.get("type", name)
    if kind not in PROTOCOLS:
        hint = _suggest(str(kind), PROTOCOLS)
        where = ("type",) if "type" in table else ()
        raise _error("unknown_name", f"unknown protocol '{kind}'; {hint} (set type = one of these)", where, kind)
    return protocol_model(kind)


def _construct_models(tables: dict[str, _Section]) -> None:
    """Build each model once (cheap: no data, no weights) so its own checks run at load time too,
    e.g. the meta model's nested feature-source tables (`item_features.text.templte` is an error now,
    not after the data has loaded)."""
    from metarec.models import build_model

    errors: list[InitErrorDetails] = []
    for name, section in tables.items():
        params = section.to_dict()  # type: ignore[attr-defined]
        if "artifact" in params:
            continue
        kind = params.pop("type", None) or name
        try:
            build_model(kind, params)
        except ConfigError as exc:
            detail = PydanticCustomError("model_check", str(exc).replace("{", "{{").replace("}", "}}"))
            errors.append({"type": detail, "loc": (name,), "input": None})
    if errors:
        raise ValidationError.from_exception_data("models", errors)


def _pick_model(name: str, table: dict[str, Any]) -> type[_Section]:
    from metarec.models import REGISTRY

    kind = table.get("type", name)
    if kind in REGISTRY:
        return model_model(kind)
    if "type" not in table and "artifact" in table:
        return ArtifactModel
    where = ("type",) if "type" in table else ()
    raise _error("unknown_name", f"unknown model '{kind}'; {_suggest(str(kind), REGISTRY)}", where, kind)


class EvaluationConfig(_Section):
    """[evaluation]: cut-offs, metrics and the paired comparisons of the report."""

    ks: Annotated[list[Annotated[int, Field(strict=True, ge=1)]], Field(min_length=1)] = [5, 10, 20]
    metrics: list[str] = Field(
        default_factory=lambda: [
            "precision",
            "recall",
            "f1",
            "ndcg",
            "hr",
            "mrr",
            "map",
            "auc",
            "coverage",
            "gini",
            "novelty",
            "tail",
        ]
    )
    main_metric: str = "ndcg@10"

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: list[str]) -> list[str]:
        from metarec.eval.evaluate import DEFAULT_METRICS

        for name in v:
            if name not in DEFAULT_METRICS:
                raise PydanticCustomError("unknown_name", f"unknown metric '{name}'; {_suggest(name, DEFAULT_METRICS)}")
        return v

    report_metrics: list[str] = Field(default_factory=lambda: ["ndcg@10", "recall@10", "hr@10"])
    compare_to: str | list[str] | None = "popularity"
    compare_to_best: list[str] = Field(default_factory=list)  # per cell, compare every model with the best of these
    bootstrap: Annotated[int, Field(ge=0)] = 2000
    chunk_elements: Annotated[int, Field(ge=1)] = 1 << 24


class DistributedConfig(_Section, DistributedSettings):
    """[distributed]: `metarec.distributed.DistributedSettings` with the config file's error messages."""


class SearchParam(_Section, SearchParamSettings):
    """One dimension of a `[search.space]`: uniform / loguniform (low, high), int (low, high), choice (values)."""


class SearchConfig(_Section, SearchSettings):
    """[search]: what `metarec tune` searches (`metarec.distributed.SearchSettings`)."""

    space: dict[str, SearchParam]  # type: ignore[assignment]


class TrackingConfig(_Section):
    """[tracking]: MLflow experiment tracking of evaluate / train / tune runs, TensorBoard training curves
    (both need the `track` extra, which `ray` includes).

    `uri` None means `$MLFLOW_TRACKING_URI`, else a SQLite store in ./mlruns (artefacts beside it)."""

    mlflow: bool = False
    uri: str | None = None
    experiment: str | None = None  # default: the config's name
    tensorboard: str | None = None  # a folder: `metarec train` writes each epoch's scalars under it


class ExperimentConfig(_Section):
    """A whole experiment file. `to_dict()` is the plain dict the runner and reports index."""

    name: str | None = None
    seed: int = 42
    num_threads: Annotated[int, Field(ge=0)] = 0
    dataset: DatasetConfig
    text: TextConfig = Field(default_factory=lambda: TextConfig(encoder=DEFAULT_ENCODER, model=DEFAULT_TEXT_MODEL))
    protocols: dict[str, ProtocolConfig]
    models: dict[str, ModelConfig]
    evaluation: EvaluationConfig = Field(default_factory=lambda: EvaluationConfig())
    tune: TuneSection | None = None
    distributed: DistributedConfig = Field(default_factory=lambda: DistributedConfig())
    tracking: TrackingConfig = Field(default_factory=lambda: TrackingConfig())
    search: SearchConfig | None = None

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset(cls, value: Any) -> Any:
        from metarec.data.sources import SOURCES

        if not isinstance(value, Mapping) or not value:
            raise _error("missing_table", _missing_table("dataset"), value=value)
        source = value.get("source")
        if source not in SOURCES:
            hint = _suggest(str(source), SOURCES) if source is not None else f"allowed: {', '.join(SOURCES)}"
            msg = f"unknown source '{source}'; {hint}" if source is not None else f"required key is missing; {hint}"
            raise _error("unknown_name", msg, ("source",), source)
        return dataset_model(source).model_validate(value)

    @field_validator("protocols", mode="before")
    @classmethod
    def _protocols(cls, value: Any) -> Any:
        return _tables("protocols", value, _pick_protocol)

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, value: Any) -> Any:
        tables = _tables("models", value, _pick_model)
        _construct_models(tables)
        return tables

    @model_validator(mode="after")
    def _references(self) -> ExperimentConfig:
        """Models named in compare_to / compare_to_best exist (when set explicitly: the default
        `popularity` is simply skipped by the report if the config has none)."""
        ev = self.evaluation
        for key in ("compare_to", "compare_to_best"):
            if key not in ev.model_fields_set:
                continue
            names = getattr(ev, key) or []
            for i, ref in enumerate([names] if isinstance(names, str) else names):
                if ref not in self.models:
                    loc: tuple[str | int, ...] = (
                        ("evaluation", key) if isinstance(names, str) else ("evaluation", key, i)
                    )
                    raise _error("unknown_name", f"no model '{ref}' in models; {_suggest(ref, self.models)}", loc, ref)
        if self.search is not None:
            if self.search.model not in self.models:
                name = self.search.model
                raise _error("unknown_name", f"no model '{name}' in models; {_suggest(name, self.models)}",
                             ("search", "model"), name)  # fmt: skip
            if self.search.protocol is not None and self.search.protocol not in self.protocols:
                name = self.search.protocol
                raise _error("unknown_name", f"no protocol '{name}' in protocols; {_suggest(name, self.protocols)}",
                             ("search", "protocol"), name)  # fmt: skip
        return self

    def to_dict(self) -> dict[str, Any]:
        """The resolved config in the shape the code indexes: model / protocol / dataset / text
        tables keep the keys the file set (models apply their own constructor defaults), the
        top level and [evaluation] are complete."""
        return {
            "name": self.name,
            "seed": self.seed,
            "num_threads": self.num_threads,
            "dataset": self.dataset.to_dict(),
            "text": self.text.to_dict(),
            "protocols": {name: p.to_dict() for name, p in self.protocols.items()},
            "models": {name: m.to_dict() for name, m in self.models.items()},
            "evaluation": self.evaluation.model_dump(),
            "tune": self.tune.to_dict() if self.tune is not None else None,
            "distributed": self.distributed.model_dump(),
            "tracking": self.tracking.model_dump(),
            **({"search": self.search.model_dump()} if self.search is not None else {}),
        }


# ------------------------------------------------------------------------------------ entry points
def parse_config(raw: Mapping[str, Any]) -> ExperimentConfig:
    """The typed config of a raw (TOML-shaped) dict; any problem is one `ConfigError` listing all."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        lines = _describe(exc.errors(), raw)
        raise ConfigError(lines[0] if len(lines) == 1 else "invalid config:\n  " + "\n  ".join(lines)) from None


def validate_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """`parse_config(raw).to_dict()`: validated, defaults filled in, as a plain dict."""
    return parse_config(raw).to_dict()


def _toml_value(text: str) -> Any:
    """A TOML value (`10`, `0.5`, `true`, `"x"`, `[1, 3]`, `{a = 1}`); anything else is a string."""
    try:
        parsed = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return text
    return parsed["v"] if list(parsed) == ["v"] else text


def parse_override(assignment: str) -> tuple[tuple[str, ...], Any]:
    """`models.maml.epochs=10` -> (("models", "maml", "epochs"), 10). Keys follow TOML's dotted-key
    rules (quote a name with dots in it); `model.` / `protocol.` are accepted for `models.` / `protocols.`."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    usage = f"--set takes KEY=VALUE with a dotted key, e.g. models.maml.epochs=10; got {assignment!r}"
    if not sep or not key:
        raise ConfigError(usage)
    try:
        node: Any = tomllib.loads(f"{key} = 0")
    except tomllib.TOMLDecodeError:
        raise ConfigError(usage) from None
    path: list[str] = []
    while isinstance(node, dict):
        if len(node) != 1:
            raise ConfigError(usage)
        ((part, node),) = node.items()
        path.append(part)
    path[0] = SECTION_ALIASES.get(path[0], path[0])
    return tuple(path), _toml_value(text.strip())


def apply_overrides(cfg: Mapping[str, Any], assignments: Iterable[str]) -> dict[str, Any]:
    """A copy of a raw config with `--set KEY=VALUE` assignments applied (validate afterwards).

    A key inside a model or protocol table must name an existing table: a misspelt table name
    would otherwise become a new model silently."""
    out = copy.deepcopy(dict(cfg))
    for assignment in assignments:
        path, value = parse_override(assignment)
        if len(path) > 2 and path[0] in ("models", "protocols"):
            tables = out.get(path[0]) or {}
            if path[1] not in tables:
                hint = _suggest(path[1], tables)
                raise ConfigError(f"--set {assignment}: no table {path[0]}.{path[1]} in the config; {hint}")
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {assignment}: {'.'.join(path[: i + 1])} is a value, not a table")
            node = child
        node[path[-1]] = value
    return out


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, val in over.items():
        if isinstance(out.get(key), dict) and isinstance(val, Mapping):
            out[key] = _deep_merge(out[key], val)
        else:
            out[key] = copy.deepcopy(val)
    return out


def load_config(path: str | Path, overrides: Mapping[str, Any] | Sequence[str] | None = None) -> dict[str, Any]:
    """Read, override, validate: the resolved config as a plain dict (name defaults to the file stem).

    `overrides` is either a nested dict merged key by key over the file, or `--set` strings
    (`["models.maml.epochs=10"]`); both go through the same validation as the file itself.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config {path} not found; the shipped ones are in configs/")
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    if isinstance(overrides, Mapping):
        raw = _deep_merge(raw, overrides)
    elif overrides:
        raw = apply_overrides(raw, [overrides] if isinstance(overrides, str) else overrides)
    try:
        cfg = validate_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    cfg["name"] = cfg["name"] or path.stem
    return cfg


__all__ = [
    "ArtifactModel",
    "ConfigError",
    "DatasetConfig",
    "EvaluationConfig",
    "ExperimentConfig",
    "ModelConfig",
    "ProtocolConfig",
    "TextConfig",
    "apply_overrides",
    "dataset_model",
    "load_config",
    "model_model",
    "parse_config",
    "parse_override",
    "protocol_model",
    "validate_config",
]
