"""Globus Compute endpoint templates: render, validate and install them.

Each site folder may hold a multi-user endpoint (MEP) template,
``configs/<site>/user_config_template.yaml.j2``, and the JSON schema the MEP
checks ``user_endpoint_config`` against, ``configs/<site>/user_config_schema.json``.
Rendering and loading go through ``globus_compute_endpoint``'s own functions
(``render_config_user_template`` and ``load_config_yaml``), so what passes here
is what the endpoint accepts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import pwd
import shutil
import socket
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import yaml

from actors.common.errors import ConfigurationError
from actors.site.profile import CONFIGS_DIR

TEMPLATE_NAME = 'user_config_template.yaml.j2'
SCHEMA_NAME = 'user_config_schema.json'

_INSTALL_HINT = "pip install 'hpc-tool-calling[endpoint]'"
_ENDPOINT_LOGGERS = ('globus_compute_endpoint.endpoint.config.utils',)


@dataclasses.dataclass(frozen=True)
class EndpointTemplate:
    """A site's endpoint template and schema.

    Attributes:
        site: Site name (folder under ``configs/``).
        template_path: The Jinja template the MEP renders.
        schema_path: The JSON schema for ``user_endpoint_config``.

    """

    site: str
    template_path: pathlib.Path
    schema_path: pathlib.Path

    def text(self) -> str:
        """The template's source."""
        return self.template_path.read_text()

    def schema(self) -> dict[str, Any]:
        """The schema as a mapping.

        Raises:
            ConfigurationError: If the schema file is not valid JSON.

        """
        try:
            return json.loads(self.schema_path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigurationError(f'{self.schema_path}: invalid JSON ({e})') from None


def endpoint_sites(configs_dir: str | os.PathLike[str] = CONFIGS_DIR) -> list[str]:
    """Sites that ship an endpoint template and schema."""
    root = pathlib.Path(configs_dir)
    return sorted(
        p.parent.name for p in root.glob(f'*/{TEMPLATE_NAME}') if (p.parent / SCHEMA_NAME).is_file()
    )


def load_template(
    site: str,
    configs_dir: str | os.PathLike[str] = CONFIGS_DIR,
) -> EndpointTemplate:
    """Find ``site``'s endpoint template and schema.

    Raises:
        ConfigurationError: If the site has no template.

    """
    sites = endpoint_sites(configs_dir)
    if site not in sites:
        raise ConfigurationError(
            f'site {site!r} has no Globus Compute endpoint template; '
            f'choose one of: {", ".join(sites)}',
        )
    folder = pathlib.Path(configs_dir, site)
    return EndpointTemplate(site, folder / TEMPLATE_NAME, folder / SCHEMA_NAME)


def _coerce(value: str, kind: Any) -> Any:
    kinds = kind if isinstance(kind, list) else [kind]
    if 'integer' in kinds:
        with contextlib.suppress(ValueError):
            return int(value)
    if 'number' in kinds:
        with contextlib.suppress(ValueError):
            return float(value)
    if 'boolean' in kinds and value.lower() in ('true', 'false'):
        return value.lower() == 'true'
    if 'array' in kinds:
        return [item for item in value.split(',') if item]
    # Anything that does not convert stays text; the schema names the problem.
    return value


def parse_assignments(pairs: Sequence[str], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Turn ``--set key=value`` flags into ``user_endpoint_config``.

    Values are converted to the type the schema declares for the key
    (integers, numbers, booleans, comma-separated arrays); everything else
    stays a string for the schema to judge.

    Raises:
        ConfigurationError: If a flag is not ``key=value``.

    """
    properties = schema.get('properties', {})
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition('=')
        if not sep or not key:
            raise ConfigurationError(
                f'--set {pair!r} is not key=value; e.g. --set account=MyProject',
            )
        options[key] = _coerce(value, properties.get(key, {}).get('type', 'string'))
    return options


@contextlib.contextmanager
def _quiet_endpoint_logs() -> Iterator[None]:
    # The endpoint logs a generic line before raising; the exception says more.
    loggers = [logging.getLogger(name) for name in _ENDPOINT_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _schema_message(error: Any) -> str:
    where = '.'.join(str(p) for p in error.absolute_path)
    return f'{where}: {error.message}' if where else f'(all): {error.message}'


def render_template(template: EndpointTemplate, options: Mapping[str, Any]) -> str:
    """Validate ``options`` with the site's schema and render the template.

    Both steps are the endpoint's own ``render_config_user_template``, as the
    MEP runs it when a task arrives with ``user_endpoint_config``.

    Raises:
        ConfigurationError: With the schema's message if a value is refused.

    """
    try:
        import jinja2
        import jsonschema
        from globus_compute_endpoint.endpoint.config import CoreEndpointConfig
        from globus_compute_endpoint.endpoint.config.utils import render_config_user_template
        from globus_compute_endpoint.endpoint.identity_mapper import MappedPosixIdentity
    except ImportError as e:
        raise ConfigurationError(
            f'rendering endpoint templates needs globus-compute-endpoint ({e.name} is '
            f'missing); install it with {_INSTALL_HINT}',
        ) from None
    identity = MappedPosixIdentity(
        local_user_record=pwd.getpwuid(os.getuid()),
        globus_identity_candidates=[],
        matched_identity=None,
    )
    try:
        with _quiet_endpoint_logs():
            return render_config_user_template(
                parent_config=CoreEndpointConfig(),
                user_config_template=template.text(),
                user_config_template_path=template.template_path,
                mapped_identity=identity,
                user_config_schema=template.schema(),
                user_opts=dict(options),
            )
    except jsonschema.ValidationError as e:
        raise ConfigurationError(
            f'{template.site} endpoint option {_schema_message(e)}',
        ) from None
    except jsonschema.SchemaError as e:
        raise ConfigurationError(f'{template.schema_path}: invalid schema ({e.message})') from None
    except ValueError as e:
        # Reserved words (_GC, parent_config, ...) and non-JSON values.
        raise ConfigurationError(f'{template.site} endpoint option: {e}') from None
    except jinja2.TemplateError as e:
        raise ConfigurationError(f'{template.template_path}: {e}') from None


def missing_interface(rendered: str) -> str | None:
    """The ``address_by_interface`` name in ``rendered`` if this host lacks it."""
    engine = (yaml.safe_load(rendered) or {}).get('engine') or {}
    address = engine.get('address')
    if isinstance(address, dict) and address.get('type') == 'address_by_interface':
        name = str(address.get('ifname', ''))
        if name not in {n for _, n in socket.if_nameindex()}:
            return name
    return None


def load_rendered(rendered: str, *, address: str | None = None) -> Any:
    """Load a rendered config with the endpoint's own ``load_config_yaml``.

    Args:
        rendered: The rendered YAML.
        address: If given, replaces the engine's address before loading.
            The MEP resolves ``address_by_interface`` on the endpoint host, so
            a machine without that interface checks everything else this way.

    Returns:
        The endpoint's ``UserEndpointConfig``.

    Raises:
        ConfigurationError: If the endpoint refuses the config.

    """
    try:
        from click import ClickException
        from globus_compute_endpoint.endpoint.config.utils import load_config_yaml
    except ImportError as e:
        raise ConfigurationError(
            f'loading endpoint configs needs globus-compute-endpoint ({e.name} is '
            f'missing); install it with {_INSTALL_HINT}',
        ) from None
    text = rendered
    if address is not None:
        data = yaml.safe_load(rendered)
        data['engine']['address'] = address
        text = yaml.safe_dump(data, sort_keys=False)
    try:
        return load_config_yaml(text)
    except ClickException as e:
        raise ConfigurationError(f'the endpoint refuses the rendered config: {e.message}') from None


def install(template: EndpointTemplate, directory: str | os.PathLike[str]) -> list[pathlib.Path]:
    """Copy the template and schema into an MEP's directory.

    An existing, different file is kept as ``<name>.orig`` the first time.

    Returns:
        The written paths.

    """
    target = pathlib.Path(os.path.expanduser(os.fspath(directory)))
    if target.exists() and not target.is_dir():
        raise ConfigurationError(
            f"--install {str(directory)!r} is a file; give the endpoint's directory "
            '(e.g. ~/.globus_compute/<name>)',
        )
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigurationError(
            f'--install {str(directory)!r} cannot be created ({e.strerror}); '
            "give the endpoint's directory",
        ) from None
    written = []
    for source in (template.template_path, template.schema_path):
        path = target / source.name
        if path.exists() and path.read_bytes() != source.read_bytes():
            backup = path.with_name(path.name + '.orig')
            if not backup.exists():
                shutil.copy2(path, backup)
        shutil.copyfile(source, path)
        written.append(path)
    return written


def validate_options(template: EndpointTemplate, options: Mapping[str, Any]) -> None:
    """Check ``user_endpoint_config`` against the site's schema, before submitting.

    The endpoint checks again with its own copy of the schema; this catches
    typos on the client, where the message is easiest to act on. The schema
    forbids unknown keys, so the endpoint's reserved names are refused too.

    Raises:
        ConfigurationError: With the schema's message if a value is refused.

    """
    import jsonschema

    try:
        jsonschema.validate(instance=dict(options), schema=template.schema())
    except jsonschema.ValidationError as e:
        raise ConfigurationError(
            f'{template.site} endpoint option {_schema_message(e)}',
        ) from None
