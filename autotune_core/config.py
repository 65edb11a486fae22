"""Configuration: one TOML file at the platform config path, plus ``AUTOTUNE_*`` environment overrides.

Errors name the file, the key and what was expected. Each plugin's ``[plugins.<name>]`` section is
validated later by the plugin's own pydantic model (see :meth:`PluginHost.plugin_settings`).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .durations import parse_duration
from .errors import ConfigError
from .modelinfo import kv_type_bytes
from .profiles import PROFILES

APP = "autotune"
M = TypeVar("M", bound=BaseModel)
MiB = 1024 * 1024


def config_path() -> Path:
    """``$AUTOTUNE_CONFIG``, else the platform config folder (XDG on Linux)."""
    explicit = os.environ.get("AUTOTUNE_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    return platformdirs.user_config_path(APP) / "config.toml"


def data_dir() -> Path:
    """``$AUTOTUNE_DATA_DIR``, else the platform data folder (memory store, profile cache)."""
    explicit = os.environ.get("AUTOTUNE_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    return platformdirs.user_data_path(APP)


class ModelOverride(BaseModel):
    """Per-model overrides: the plugin stack, the profile, who decides the client's knobs, and fixed knobs.

    A knob set here is pinned like a client's value (see precedence.py): plugins only propose, safety
    guards may lower it with a warning, and a client's explicit value still wins over it.
    """

    model_config = ConfigDict(extra="forbid")

    profile: str | None = None
    disabled: list[str] = Field(default_factory=list)
    plugins: list[str] | None = None
    #: "respect" (the client's explicit values win) or "tune" (the plugins decide); None = the global setting
    client_overrides: Literal["respect", "tune"] | None = None
    num_ctx: int | None = Field(default=None, ge=64)
    num_batch: int | None = Field(default=None, ge=1)
    num_keep: int | None = Field(default=None, ge=0)
    num_thread: int | None = Field(default=None, ge=1)
    #: seconds, or a duration such as "30m"; negative keeps the model loaded forever
    keep_alive: float | None = None
    kv_type: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float | None:
        if value is None:
            return None
        if not isinstance(value, str | int | float):
            raise ValueError("expected seconds or a duration such as '30m'")
        return parse_duration(value)

    @field_validator("kv_type")
    @classmethod
    def _known_kv(cls, value: str | None) -> str | None:
        if value is None:
            return None
        kv_type_bytes(value)  # raises ValueError naming the known types
        return value.lower()


class ServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=1, le=65535)
    max_concurrent: int = Field(default=2, ge=1)
    max_queued: int = Field(default=16, ge=0)
    queue_timeout: float = Field(default=120.0, gt=0)
    max_body_bytes: int = Field(default=10 * MiB, ge=1024)
    upstream_timeout: float = Field(default=300.0, gt=0)
    #: when set, clients must send ``Authorization: Bearer <key>`` (compared in constant time)
    api_key: str | None = None
    #: the server's plugin stack: names of optimization plugins to run (None = every enabled one)
    plugins: list[str] | None = None
    models: dict[str, ModelOverride] = Field(default_factory=dict)
    #: log prompt text (off by default: prompts are private)
    log_prompts: bool = False
    #: Host names accepted besides loopback and the bound address (DNS-rebinding protection); "*" = any
    allowed_hosts: list[str] = Field(default_factory=list)
    #: browser origins allowed besides Ollama's local defaults (OLLAMA_ORIGINS forms, "*" wildcards)
    allowed_origins: list[str] = Field(default_factory=list)

    @field_validator("allowed_hosts", "allowed_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """``AUTOTUNE_ORIGINS=a,b`` arrives as one string, as ``OLLAMA_ORIGINS`` does."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class PluginsConfig(BaseModel):
    """``[plugins]``: toggles plus one sub-table of settings per plugin."""

    model_config = ConfigDict(extra="forbid")

    disabled: list[str] = Field(default_factory=list)
    #: opt-in plugins switched on
    enabled: list[str] = Field(default_factory=list)
    #: extra plugins as ``module:attr``, registered after entry points
    load: list[str] = Field(default_factory=list)
    settings: dict[str, dict[str, Any]] = Field(default_factory=dict)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: str = "balanced"
    #: who decides a knob the client set explicitly: "respect" (the client, default) or "tune" (the plugins)
    client_overrides: Literal["respect", "tune"] = "respect"
    #: force one backend by name (else: the first that answers, in ``backend_order``)
    backend: str | None = None
    backend_order: list[str] = Field(default_factory=lambda: ["ollama", "openai", "llamacpp", "mlx"])
    #: model aliases: name -> "backend/model" or a model name
    aliases: dict[str, str] = Field(default_factory=dict)
    server: ServerConfig = Field(default_factory=ServerConfig)
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)
    backends: dict[str, dict[str, Any]] = Field(default_factory=dict)
    archetypes: dict[str, Any] = Field(default_factory=dict)
    #: where this came from, for error messages and ``config path``
    source: str = Field(default="<defaults>", exclude=True)

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        if value not in PROFILES:
            raise ValueError(f"expected one of {', '.join(PROFILES)}")
        return value

    def backend_settings(self, name: str) -> dict[str, Any]:
        return dict(self.backends.get(name, {}))


#: environment variable -> dotted config key
ENV_OVERRIDES: dict[str, str] = {
    "AUTOTUNE_PROFILE": "profile",
    "AUTOTUNE_CLIENT_OVERRIDES": "client_overrides",
    "AUTOTUNE_BACKEND": "backend",
    "AUTOTUNE_HOST": "server.host",
    "AUTOTUNE_PORT": "server.port",
    "AUTOTUNE_MAX_CONCURRENT": "server.max_concurrent",
    "AUTOTUNE_MAX_QUEUED": "server.max_queued",
    "AUTOTUNE_QUEUE_TIMEOUT": "server.queue_timeout",
    "AUTOTUNE_WAIT_TIMEOUT": "server.queue_timeout",
    "AUTOTUNE_MAX_BODY_BYTES": "server.max_body_bytes",
    "AUTOTUNE_UPSTREAM_TIMEOUT": "server.upstream_timeout",
    "AUTOTUNE_API_KEY": "server.api_key",
    "AUTOTUNE_LOG_PROMPTS": "server.log_prompts",
    "AUTOTUNE_ALLOWED_HOSTS": "server.allowed_hosts",
    "AUTOTUNE_ORIGINS": "server.allowed_origins",
    "AUTOTUNE_OLLAMA_URL": "backends.ollama.url",
    "AUTOTUNE_OPENAI_URL": "backends.openai.url",
    "AUTOTUNE_OPENAI_FLAVOUR": "backends.openai.flavour",
    "AUTOTUNE_MODEL_PATH": "backends.llamacpp.model_path",
}


#: keys whose variable is always text: a key, and comma lists as OLLAMA_ORIGINS takes them
TEXT_OVERRIDES = frozenset({"server.api_key", "server.allowed_hosts", "server.allowed_origins"})


def _split_plugins_table(raw: dict[str, Any]) -> dict[str, Any]:
    plugins = dict(raw.get("plugins", {}))
    settings = {key: value for key, value in plugins.items() if isinstance(value, dict)}
    table = {key: value for key, value in plugins.items() if not isinstance(value, dict)}
    if settings:
        table["settings"] = {**table.get("settings", {}), **settings}
    return {**raw, "plugins": table}


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {key!r}: {part!r} is a value, not a table")
        node = child
    node[parts[-1]] = value


def parse_value(text: str) -> Any:
    """A CLI/env value as TOML would read it (numbers, booleans, arrays), else the plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<root>"
        key = key.replace("plugins.settings.", "plugins.")
        got = item.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {key}: {item['msg']}{shown}")
    return "\n".join(lines)


def validate_section(model: type[M], raw: dict[str, Any], *, section: str, label: str, source: str = "") -> M:
    """Validate one table (``[plugins.<name>]``, ``[backends.<name>]``) with its owner's model.

    The error names the file and every bad key in full (``plugins.ctx-sizing.headroom: ...``), the same for
    plugins and backends.
    """
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        lines = [f"invalid settings for {label}" + (f" in {source}:" if source else ":")]
        for item in exc.errors():
            key = ".".join(str(part) for part in item["loc"])
            got = item.get("input")
            lines.append(f"  {section}.{key}: {item['msg']}" + ("" if isinstance(got, dict) else f" (got {got!r})"))
        raise ConfigError("\n".join(lines)) from None


def read_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in {path}: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc


def validate_settings(raw: dict[str, Any], source: str) -> Settings:
    try:
        settings = Settings.model_validate(_split_plugins_table(raw))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    settings.source = source
    return settings


def load_settings(
    path: Path | None = None, *, env: dict[str, str] | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Read the file, apply environment overrides, then explicit overrides, and validate."""
    path = path or config_path()
    raw = read_toml(path)
    environ = os.environ if env is None else env
    applied = []
    for var, key in ENV_OVERRIDES.items():
        if var in environ and environ[var] != "":
            set_dotted(raw, key, parse_value(environ[var]) if key not in TEXT_OVERRIDES else environ[var])
            applied.append(var)
    for key, value in (overrides or {}).items():
        set_dotted(raw, key, value)
    source = str(path) + (f" (with {', '.join(applied)})" if applied else "")
    return validate_settings(raw, source)


def write_setting(path: Path, key: str, value: Any, *, check: Callable[[Settings], None] | None = None) -> None:
    """Set one dotted key in the TOML file, keeping the user's comments; validated before writing.

    ``check`` sees the would-be settings and may raise :class:`ConfigError` (e.g. a plugin's own
    settings model), so nothing invalid reaches the file.
    """
    import tomlkit

    try:
        document = tomlkit.parse(path.read_text(encoding="utf-8")) if path.exists() else tomlkit.document()
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(f"invalid TOML in {path}: {exc}") from exc
    plain = document.unwrap()
    set_dotted(plain, key, value)
    settings = validate_settings(plain, str(path))
    if check is not None:
        check(settings)
    node: Any = document
    parts = key.split(".")
    for part in parts[:-1]:
        if part not in node:
            node[part] = tomlkit.table()
        node = node[part]
    node[parts[-1]] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(tomlkit.dumps(document), encoding="utf-8")
    tmp.replace(path)
