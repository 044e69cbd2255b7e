"""The OpenAI-compatible endpoint a model-driven planner talks to.

[`ModelOptions`][actors.client.model_endpoint.ModelOptions] says where the
model is (``--llm URL --model NAME``) and how far it may go;
[`check_options`][actors.client.model_endpoint.check_options] checks them
before anything starts; [`open_client`][actors.client.model_endpoint.open_client]
makes the ``openai`` SDK's async client, with the API key read from an
environment variable (never a flag value: a command line is visible to every
user of the node); [`explain`][actors.client.model_endpoint.explain] turns the
SDK's errors into one line that names the URL.

Works with any server of the OpenAI chat completions API: vLLM (``vllm serve
... --enable-auto-tool-choice --tool-call-parser ...``), hosted inference
services such as ALCF's or NERSC's, or OpenAI itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
import re
import urllib.parse
from typing import TYPE_CHECKING
from typing import Any

from actors.common.errors import ConfigurationError
from actors.common.errors import HpcToolCallingError
from actors.common.timing import MODEL_CONNECT_TIMEOUT
from actors.common.timing import MODEL_PROBE_TIMEOUT
from actors.common.timing import MODEL_TIMEOUT

if TYPE_CHECKING:
    import openai

logger = logging.getLogger(__name__)

DEFAULT_KEY_ENV = 'OPENAI_API_KEY'
"""Environment variable the API key is read from unless ``--llm-key-env`` names another."""
DEFAULT_MAX_STEPS = 8
"""Model turns (chat completions) a campaign may take."""
DEFAULT_MAX_CALLS = 64
"""Tool calls a campaign may send to the Directors."""
LOOPBACK_KEY = 'EMPTY'
"""Key sent to a loopback endpoint when none is set (vLLM's convention: any key will do)."""

_ENV_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """Where the planner's model is and how far the campaign may go.

    Attributes:
        url: Base URL of the OpenAI-compatible API (``http://host:8000/v1``).
        model: Model name as the server knows it.
        key_env: Environment variable holding the API key.
        max_steps: Model turns (chat completions) the campaign may take.
        max_calls: Tool calls it may send to the Directors.
        timeout: Seconds one model request may take.
        retries: Times the SDK retries a request that failed to connect,
            timed out or got a 429/5xx.

    """

    url: str
    model: str
    key_env: str = DEFAULT_KEY_ENV
    max_steps: int = DEFAULT_MAX_STEPS
    max_calls: int = DEFAULT_MAX_CALLS
    timeout: float = MODEL_TIMEOUT
    retries: int = 2

    @property
    def shown_url(self) -> str:
        """The URL without any user or password in it, for messages and reports."""
        return redact_url(self.url)


def redact_url(url: str) -> str:
    """``url`` with its ``user:password@`` part (if any) left out."""
    parts = urllib.parse.urlsplit(url)
    if '@' not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit('@', 1)[1]))


def is_loopback(url: str) -> bool:
    """Whether ``url``'s host is this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    host = urllib.parse.urlsplit(url).hostname or ''
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_options(options: ModelOptions) -> None:
    """Refuse a bad URL, budget or key variable, and a missing key, before anything starts.

    Raises:
        ConfigurationError: Naming the bad value and what is valid.

    """
    shown = options.shown_url
    parts = urllib.parse.urlsplit(options.url)
    if parts.scheme not in ('http', 'https') or not parts.hostname:
        raise ConfigurationError(
            f'--llm {shown!r} is not an http(s) URL; give the base URL of an OpenAI-compatible '
            'API, e.g. http://127.0.0.1:8000/v1',
        )
    try:
        _ = parts.port
    except ValueError:
        raise ConfigurationError(f'--llm {shown!r} has a bad port; give 1-65535') from None
    if not options.model.strip():
        raise ConfigurationError('--model is empty; give the model name the server serves')
    if options.max_steps < 1:
        raise ConfigurationError(f'--llm-max-steps {options.max_steps} is invalid; give 1 or more')
    if options.max_calls < 1:
        raise ConfigurationError(f'--llm-max-calls {options.max_calls} is invalid; give 1 or more')
    if not 0 < options.timeout < float('inf'):
        raise ConfigurationError(f'--llm-timeout {options.timeout} is invalid; give seconds > 0')
    if not _ENV_NAME.fullmatch(options.key_env):
        # Never echo it: it may be the key itself, given by mistake.
        raise ConfigurationError(
            '--llm-key-env takes the NAME of an environment variable (letters, digits and _), '
            'not the key; export the key in that variable',
        )
    api_key(options)


def api_key(options: ModelOptions) -> str:
    """The API key from ``options.key_env``; a dummy one for a loopback endpoint.

    Raises:
        ConfigurationError: If the variable is unset or empty and the
            endpoint is not on this machine.

    """
    key = os.environ.get(options.key_env, '').strip()
    if key:
        return key
    if is_loopback(options.url):
        return LOOPBACK_KEY
    hint = '' if options.key_env != DEFAULT_KEY_ENV else ' (or name another with --llm-key-env)'
    raise ConfigurationError(
        f'--llm {options.shown_url}: no API key in ${options.key_env}; export the key in '
        f'that variable{hint}',
    )


def open_client(options: ModelOptions, *, retries: int | None = None) -> openai.AsyncOpenAI:
    """The SDK's async client for the endpoint (close it with ``await client.close()``).

    Raises:
        ConfigurationError: If no API key is set for a remote endpoint.

    """
    import openai

    # The SDK's own Timeout class: openai 1.x/2.x build on httpx, 3.x on httpx2, and each
    # rejects the other's Timeout.
    return openai.AsyncOpenAI(
        base_url=options.url,
        api_key=api_key(options),
        timeout=openai.Timeout(
            options.timeout, connect=min(MODEL_CONNECT_TIMEOUT, options.timeout)
        ),
        max_retries=options.retries if retries is None else retries,
    )


def request_deadline(options: ModelOptions, retries: int | None = None) -> float:
    """Seconds one model request may take in all: each attempt's timeout, retries included.

    A second per attempt more than the SDK's own timeouts, so that a server that
    is merely slow still gets the SDK's own (clearer) error.
    """
    return (options.timeout + 1.0) * (1 + (options.retries if retries is None else retries))


class ModelEndpointError(HpcToolCallingError, ConnectionError):
    """The model endpoint failed during a campaign (unreachable, refused, bad answer)."""


def explain(options: ModelOptions, error: BaseException) -> str | None:
    """One line on what went wrong talking to the endpoint; ``None`` if not an SDK error."""
    import openai

    url = options.shown_url
    if isinstance(error, openai.APITimeoutError):
        text = f'the model endpoint {url} did not answer within {options.timeout:g}s'
    elif isinstance(error, openai.APIConnectionError):
        cause = error.__cause__ or error.__context__
        why = _reason(cause) if cause is not None else str(error)
        text = f'cannot reach the model endpoint {url} ({why})'
    elif isinstance(error, (openai.AuthenticationError, openai.PermissionDeniedError)):
        text = (
            f'the model endpoint {url} refused the API key from ${options.key_env} '
            f'({error.status_code}: {_message(error)})'
        )
    elif isinstance(error, openai.NotFoundError):
        path = urllib.parse.urlsplit(options.url).path.rstrip('/')
        text = (
            f'the model endpoint {url} has no model {options.model!r} or no chat completions '
            f'(404: {_message(error)}){"" if path else "; end --llm in /v1?"}'
        )
    elif isinstance(error, openai.APIStatusError):
        verb = 'failed' if error.status_code >= 500 else 'refused the request'
        text = f'the model endpoint {url} {verb} ({error.status_code}: {_message(error)})'
    elif isinstance(error, openai.APIResponseValidationError):
        text = f'the model endpoint {url} answered in an unexpected format ({error})'
    elif isinstance(error, openai.OpenAIError):
        text = f'the model endpoint {url} failed: {error}'
    else:
        return None
    return text


def _reason(error: BaseException) -> str:
    """The innermost cause of a connection error, e.g. ``[Errno 111] Connection refused``."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    if isinstance(error, ConnectionRefusedError):
        return 'connection refused'
    return str(error) or type(error).__name__


def _message(error: Any) -> str:
    """The server's error message, short."""
    body = getattr(error, 'body', None)
    message = body.get('message') if isinstance(body, dict) else None
    text = str(message or getattr(error, 'message', '') or error)
    return text if len(text) <= 300 else text[:297] + '...'


async def probe(options: ModelOptions) -> None:
    """Check that the endpoint answers, before any Director starts.

    Asks ``GET /models`` once. A server without that route is fine (the
    campaign's first request will tell); a model it does not list is
    logged, not refused (some gateways route more models than they list).

    Raises:
        ConfigurationError: If it cannot be reached, times out, refuses the
            key, or answers with something that is not a model list (an HTML
            page: the URL is not the API's).

    """
    import openai

    from actors.client.model_reply import ModelReplyError
    from actors.client.model_reply import read_model_list

    probing = dataclasses.replace(options, timeout=min(options.timeout, MODEL_PROBE_TIMEOUT))
    client = open_client(probing, retries=1)
    try:
        async with asyncio.timeout(request_deadline(probing, retries=1)):
            # The raw body: the SDK does not check its shape (HTML fails deep inside it).
            response = await client.models.with_raw_response.list()
            body = response.text
    except TimeoutError:
        raise ConfigurationError(
            f'the model endpoint {options.shown_url} did not answer GET /models within '
            f'{request_deadline(probing, retries=1):g}s; check --llm and the server',
        ) from None
    except (openai.APIConnectionError, openai.AuthenticationError) as e:
        raise ConfigurationError(f'{explain(probing, e)}; check --llm and the server') from None
    except openai.OpenAIError as e:
        logger.info('model endpoint %s: GET /models failed (%s); going on', options.shown_url, e)
        return
    finally:
        await client.close()
    try:
        listed = read_model_list(body, response.headers.get('content-type', ''))
    except ModelReplyError as e:
        raise ConfigurationError(
            f'the model endpoint {options.shown_url} {e}; check --llm and the server'
        ) from None
    if listed and options.model not in listed:
        logger.warning(
            'model endpoint %s does not list model %r (it lists: %s)',
            options.shown_url,
            options.model,
            ', '.join(listed[:10]),
        )
