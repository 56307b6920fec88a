"""Node and coordinator configuration files (YAML), validated with pydantic.

Relative paths in a config file are resolved against the directory holding the file,
so a deployment directory can be moved as a whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scifed.errors import Invalid, UserError, excerpt, join_problems
from scifed.limits import MAX_DOCUMENT_BYTES, MAX_DOCUMENT_DEPTH, MAX_DOCUMENT_VALUES
from scifed.sentences import pydantic_problem

if TYPE_CHECKING:  # scifed.tls loads grpc: a config is read without it (the health check)
    from scifed.tls import TlsFiles

M = TypeVar("M", bound=BaseModel)

FLOWER_PORT = 9093  # the Flower SuperLink's port unless coordinator.yaml says otherwise


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TlsConfig(_Strict):
    ca: Path
    cert: Path
    key: Path
    crl: Path | None = None

    def files(self) -> TlsFiles:
        from scifed.tls import TlsFiles

        return TlsFiles(self.ca, self.cert, self.key)


class NodeConfig(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    platform: str
    coordinator: str = Field(description="host:port of the coordinator")
    data_dir: Path
    state_dir: Path
    tls: TlsConfig
    admin_socket: Path | None = None
    reconnect_max_seconds: float = Field(default=10.0, gt=0)
    flower_superlink: str | None = Field(
        default=None, description="Fleet API host:port of the coordinator's Flower "
        "SuperLink; set it to take part in federated training")
    trusted_apps: list[Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = Field(
        default_factory=list, description="sha256 of Flower app bundles (FABs) besides "
        "the apps of this node's own scifed that its ClientApp executor may run; each one "
        "is code the officer has read and approved")
    crl_max_age_seconds: float = Field(
        default=86400.0, gt=0, description="the oldest certificate revocation list (by the "
        "time the CA signed it) this node trusts: with an older one, or none, it refuses "
        "tasks that trust other parties (a study key, a researcher, contributors)")
    output_review_hours: float = Field(
        default=168.0, gt=0, description="how long a pooled result waits for the officer's "
        "output review (where policy asks for one) before it is withheld unreleased")
    delivery_max_bytes: int = Field(
        default=10 * 1024**3, gt=0, description="the most disk that prepared downloads "
        "of all grants together may hold in state_dir/deliveries (a grant's download is a "
        "copy of its data until the grant is revoked or expires); a download that would "
        "go beyond it is refused")
    approvers: dict[str, Literal["officer", "liaison", "security_lead"]] = Field(
        default_factory=dict, description="deprecated, approves nothing: approvers are "
        "people with keys (`scifed node approver add NAME --role ROLE`); the node warns at "
        "start for each name listed here")

    @property
    def socket_path(self) -> Path:
        return self.admin_socket or self.state_dir / "admin.sock"


class CoordinatorConfig(_Strict):
    listen: str = "127.0.0.1:7443"
    state_dir: Path
    database: str | None = Field(
        default=None, description="SQLAlchemy URL; default SQLite in state_dir")
    tls: TlsConfig
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    offline_after_seconds: float = Field(default=15.0, gt=0)
    task_timeout_seconds: float = Field(
        default=60.0, gt=0, description="how long a job waits for a node to come online "
        "and answer one task before counting it out")
    flower_port: int | None = Field(
        default=None, ge=1, le=65535, description="run a Flower SuperLink on this loopback "
        "port for `train` jobs (publish only its /v1/fleet/* through a reverse proxy)")
    approval_timeout_seconds: float = Field(
        default=7 * 86400, gt=0, description="how long a job waits for officers' approvals")
    max_workers: int = Field(default=128, ge=8)

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{self.state_dir / 'coordinator.db'}"


def _resolve(value: Any, base: Path) -> Any:
    if isinstance(value, Path):
        return value if value.is_absolute() else (base / value).resolve()
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            object.__setattr__(value, name, _resolve(getattr(value, name), base))
    return value


def validation_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """Each problem of a pydantic error as ``(field.path, message)``, without pydantic's
    URLs or inputs; the path is ``""`` for a problem of the whole document. A generic
    message (missing, wrong type, out of range) is a sentence with its key, which a
    console shows in its page's language (:func:`scifed.sentences.pydantic_problem`)."""
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(excerpt(p, 60) for p in err["loc"])
        message = excerpt(err["msg"].removeprefix("Value error, "))
        out.append((where, pydantic_problem(err, message)))
    return out


def format_validation_error(source: str, exc: ValidationError) -> str:
    """One line per problem: `source: field.path: message` (no pydantic URLs), each part
    an excerpt and as many lines as fit a short message (:func:`join_problems`)."""
    source = excerpt(source, 100)
    return join_problems(f"{source}: {excerpt(where or '(document)', 120)}: {msg}"
                         for where, msg in validation_problems(exc))


class _TooDeep(Exception):
    def __init__(self, mark: yaml.Mark | None) -> None:
        self.mark = mark


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing nesting deeper than ``max_depth`` as it composes,
    before its recursive composer can go deep; notes whether the document has aliases."""

    def __init__(self, stream: str, max_depth: int) -> None:
        super().__init__(stream)
        self.max_depth = max_depth
        self.depth = 0
        self.has_aliases = False

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.has_aliases = True
            return super().compose_node(parent, index)
        nested = self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent)
        if nested:
            self.depth += 1
            if self.depth > self.max_depth:
                raise _TooDeep(self.peek_event().start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            if nested:
                self.depth -= 1


def check_structure(data: Any, source: str, *, max_depth: int = MAX_DOCUMENT_DEPTH,
                    max_values: int = MAX_DOCUMENT_VALUES) -> None:
    """Refuse data nested deeper than ``max_depth`` containers, or holding more than
    ``max_values`` values (keys, items, scalars), walking it without recursion, so it
    is safe on any parsed document, including shared or cyclic (YAML alias) parts."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    seen = 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > max_values:
            raise UserError(f"{excerpt(source, 100)}: more than {max_values} values (the "
                            "limit; YAML aliases count as often as they are used)")
        if isinstance(value, dict):
            children: Any = [x for pair in value.items() for x in pair]
        elif isinstance(value, list | tuple | set | frozenset):
            children = value
        else:
            continue
        if depth > max_depth:
            raise UserError(f"{excerpt(source, 100)}: nested deeper than {max_depth} levels "
                            "(the limit)")
        stack.extend((child, depth + 1) for child in children)


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def parse_yaml_mapping(text: str, source: str, expected: str = "settings", *,
                       allow_empty: bool = True, max_bytes: int = MAX_DOCUMENT_BYTES,
                       max_depth: int = MAX_DOCUMENT_DEPTH) -> dict:
    """YAML text that must hold a mapping; errors name `source`, line and column.

    The text may hold at most ``max_bytes`` bytes of UTF-8 and nest at most
    ``max_depth`` levels (checked while composing, before any recursion goes deep);
    with aliases expanded it may hold at most :data:`MAX_DOCUMENT_VALUES` values."""
    name = excerpt(source, 100)
    if not isinstance(text, str):
        raise UserError(f"{name}: expected YAML text, got {type(text).__name__}")
    # Characters never outnumber UTF-8 bytes: the cheap test first, the exact one after.
    if len(text) > max_bytes or _utf8_size(text) > max_bytes:
        raise UserError(f"{name}: larger than {max_bytes // 1024} KiB (the limit), got "
                        f"{_utf8_size(text)} bytes")
    loader = None
    try:
        loader = _BoundedLoader(text, max_depth)  # its reader refuses control characters
        data = loader.get_single_data()
    except _TooDeep as exc:
        where = f" at line {exc.mark.line + 1}" if exc.mark else ""
        raise UserError(f"{name}: nested deeper than {max_depth} levels (the limit)"
                        f"{where}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"{name}: not valid YAML{where}: {excerpt(exc.problem)}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{name}: not valid YAML: {excerpt(exc)}") from None
    except RecursionError:  # a safety net: the loader above stops far earlier
        raise UserError(f"{name}: nested deeper than {max_depth} levels "
                        "(the limit)") from None
    except Exception as exc:  # a scalar that PyYAML fails to construct
        # (a date like 2024-13-45, an integer of more than 4300 digits, `!!int zz`)
        raise UserError(f"{name}: not valid YAML: a value cannot be read "
                        f"({excerpt(exc)})") from None
    finally:
        if loader is not None:
            loader.dispose()
    if loader.has_aliases:
        check_structure(data, source, max_depth=max_depth)
    if data is None:
        if not allow_empty:
            raise UserError(f"{name}: empty; expected the {expected} as a YAML mapping")
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{name}: expected a YAML mapping of {expected}, "
                        f"got a {type(data).__name__}")
    return data


def parse_model(text: str, source: str, model: type[M], expected: str = "settings", *,
                max_bytes: int = MAX_DOCUMENT_BYTES, max_depth: int = MAX_DOCUMENT_DEPTH) -> M:
    """Parse YAML text into `model`: one line per problem, naming `source` and the field."""
    data = parse_yaml_mapping(text, source, expected, max_bytes=max_bytes, max_depth=max_depth)
    return validate_model(data, source, model)


def validate_model(data: Any, source: str, model: type[M]) -> M:
    """``model.model_validate(data)``, any problem one UserError (already-bounded data)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Invalid(format_validation_error(source, exc), validation_problems(exc)) from None
    except RecursionError:  # check_structure bounds the depth; pydantic must not recurse
        raise UserError(f"{excerpt(source, 100)}: nested too deeply") from None


def load_config(path: Path, model: type[M]) -> M:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    cfg = parse_model(text, str(path), model)
    return _resolve(cfg, Path(path).resolve().parent)


def write_config(path: Path, cfg: BaseModel) -> None:
    """Write a config with paths relative to the file's directory where possible."""
    base = Path(path).resolve().parent

    def rel(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: rel(x) for k, x in v.items() if x is not None}
        if isinstance(v, Path):
            try:
                return str(v.resolve().relative_to(base))
            except ValueError:
                return str(v)
        return v

    Path(path).write_text(yaml.safe_dump(rel(cfg.model_dump()), sort_keys=False),
                          encoding="utf-8")
