"""Globus Compute: run the Directors on a batch job's endpoint."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from actors.errors import ConfigurationError

logger = logging.getLogger(__name__)


def make_globus_executor(endpoint: str, user_endpoint_config: dict[str, Any]) -> Any:
    """Build the SDK's ``Executor`` for ``endpoint``.

    Raises:
        ConfigurationError: If no credentials are available and nobody can
            log in interactively.

    """
    from globus_compute_sdk import Executor
    from globus_compute_sdk.sdk.login_manager import LoginManager

    manager = LoginManager()
    has_tokens = bool(manager._token_storage.get_token_data_by_resource_server())
    client_creds = bool(
        os.environ.get('GLOBUS_COMPUTE_CLIENT_ID')
        and os.environ.get('GLOBUS_COMPUTE_CLIENT_SECRET'),
    )
    if not (has_tokens or client_creds) and not sys.stdin.isatty():
        raise ConfigurationError(
            'no Globus credentials: run `globus-compute-endpoint login` (or '
            '`python -c "import globus_compute_sdk as g; g.Client()"`) once '
            'interactively, or set GLOBUS_COMPUTE_CLIENT_ID and '
            'GLOBUS_COMPUTE_CLIENT_SECRET',
        )
    logger.info('connecting to Globus Compute endpoint %s', endpoint)
    return Executor(endpoint_id=endpoint, user_endpoint_config=user_endpoint_config)
