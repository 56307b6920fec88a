"""Node and coordinator configuration files (YAML), validated with pydantic.

Relative paths in a config file are resolved against the directory holding the file,
so a deployment directory can be moved as a whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scifed.errors import UserError
from scifed.tls import TlsFiles

M = TypeVar("M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TlsConfig(_Strict):
    ca: Path
    cert: Path
    key: Path
    crl: Path | None = None

    def files(self) -> TlsFiles:
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
    approvers: dict[str, Literal["officer", "liaison", "security_lead"]] = Field(
        default_factory=dict, description="person -> role for the approval queue; empty: "
        "whoever can reach the admin socket acts as the officer")

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


def format_validation_error(source: str, exc: ValidationError) -> str:
    """One line per problem: `source: field.path: message` (no pydantic URLs)."""
    lines = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "(document)"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {where}: {msg}")
    return "\n".join(lines)


def parse_yaml_mapping(text: str, source: str, expected: str = "settings", *,
                       allow_empty: bool = True) -> dict:
    """YAML text that must hold a mapping; errors name `source`, line and column."""
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"{source}: not valid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{source}: not valid YAML: {exc}") from None
    if data is None:
        if not allow_empty:
            raise UserError(f"{source}: empty; expected the {expected} as a YAML mapping")
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a YAML mapping of {expected}, "
                        f"got a {type(data).__name__}")
    return data


def parse_model(text: str, source: str, model: type[M], expected: str = "settings") -> M:
    """Parse YAML text into `model`: one line per problem, naming `source` and the field."""
    data = parse_yaml_mapping(text, source, expected)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(source, exc)) from None


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
