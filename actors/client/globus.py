"""Globus Compute and Globus Auth: run the Directors on a batch job's endpoint.

Building the SDK's [`Executor`][globus_compute_sdk.Executor] and connecting to
the hosted Academy exchange both log in through Globus Auth. Without stored
tokens (or client credentials in the environment) the SDK would start an
interactive login that waits on stdin forever when nobody is there; the
checks here fail first with a message that says how to log in.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

from actors.common.errors import ConfigurationError

logger = logging.getLogger(__name__)

COMPUTE_LOGIN_HINT = (
    'log in once in a terminal with `globus-compute-endpoint login` (or '
    '`python -c "from globus_compute_sdk import Client; Client()"`), or set '
    'GLOBUS_COMPUTE_CLIENT_ID and GLOBUS_COMPUTE_CLIENT_SECRET'
)
ACADEMY_LOGIN_HINT = (
    'log in once in a terminal with `python -c "from academy.exchange.cloud.login '
    "import get_auth_headers; get_auth_headers('globus')\"`, or set "
    'ACADEMY_GLOBUS_CLIENT_ID and ACADEMY_GLOBUS_CLIENT_SECRET'
)


def ensure_logged_in(
    app: Any,
    service: str,
    hint: str,
    *,
    interactive: Callable[[], bool] | None = None,
) -> None:
    """Make sure ``app`` can get tokens without waiting on a missing user.

    A client identity (``ClientApp``) logs in by itself; a user app with
    valid stored tokens needs nothing. Otherwise a user at a terminal is
    walked through the login now, and anyone else gets an error.

    Args:
        app: A ``globus_sdk.GlobusApp`` with its scope requirements added.
        service: Name of the service for the message.
        hint: How to log in, for the message.
        interactive: Whether a user can answer a prompt (default: stdin is
            a terminal).

    Raises:
        ConfigurationError: If a login is needed and nobody can do it.

    """
    from globus_sdk import UserApp

    if not isinstance(app, UserApp) or not app.login_required():
        return
    can_prompt = interactive() if interactive is not None else sys.stdin.isatty()
    if not can_prompt:
        raise ConfigurationError(
            f'no Globus credentials for {service} and no terminal to log in from; {hint}',
        )
    app.login()


def require_academy_login(*, interactive: Callable[[], bool] | None = None) -> None:
    """Check the hosted Academy exchange's Globus login before connecting.

    Raises:
        ConfigurationError: If a login is needed and nobody can do it.

    """
    from academy.exchange.cloud.login import get_globus_app
    from academy.exchange.cloud.scopes import AcademyExchangeScopes

    try:
        app = get_globus_app()
    except ValueError as e:
        raise ConfigurationError(f'Academy exchange credentials: {e}') from None
    app.add_scope_requirements(
        {AcademyExchangeScopes.resource_server: [AcademyExchangeScopes.academy_exchange]},
    )
    ensure_logged_in(app, 'the Academy exchange', ACADEMY_LOGIN_HINT, interactive=interactive)


def make_globus_executor(
    endpoint: str,
    user_endpoint_config: Mapping[str, Any],
    *,
    interactive: Callable[[], bool] | None = None,
) -> Any:
    """Build the SDK's ``Executor`` for ``endpoint``.

    Args:
        endpoint: The multi-user endpoint's UUID.
        user_endpoint_config: Values for the endpoint's template (its
            schema checks them again on the endpoint).
        interactive: Whether a user can answer a login prompt.

    Raises:
        ConfigurationError: If no credentials are available and nobody can
            log in interactively.

    """
    from globus_compute_sdk import Client
    from globus_compute_sdk import Executor
    from globus_compute_sdk.sdk.auth.globus_app import get_globus_app

    try:
        app = get_globus_app()
    except ValueError as e:
        raise ConfigurationError(f'Globus Compute credentials: {e}') from None
    # The client registers the Compute scopes on the app; no request is made yet.
    client = Client(app=app, do_version_check=False)
    ensure_logged_in(app, 'Globus Compute', COMPUTE_LOGIN_HINT, interactive=interactive)
    logger.info(
        'submitting Directors to Globus Compute endpoint %s with %s',
        endpoint,
        dict(user_endpoint_config),
    )
    return Executor(
        endpoint_id=endpoint,
        client=client,
        user_endpoint_config=dict(user_endpoint_config),
    )
