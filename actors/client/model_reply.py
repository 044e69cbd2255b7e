"""Reading what an OpenAI-compatible server sent: a chat completion, or its model list.

The ``openai`` SDK builds its response objects without checking them: a
``null`` message, a string token count, HTML or a truncated body come out as
``AttributeError``, ``TypeError`` or ``JSONDecodeError`` deep in the planner.
The planner takes the raw body instead and reads it here, so that whatever a
server sends, a bad answer is one
[`ModelReplyError`][actors.client.model_reply.ModelReplyError] line that says
what was wrong and quotes (briefly) what came; the caller puts the endpoint's
URL in front.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from actors.common.errors import HpcToolCallingError
from actors.common.errors import quoted

USAGE_KEYS = ('prompt_tokens', 'completion_tokens', 'total_tokens')
"""Token counts summed over a campaign's turns."""


class ModelReplyError(HpcToolCallingError, ValueError):
    """A server's answer is not what the API says: ``sent WHAT: QUOTE``, to follow its URL."""


@dataclasses.dataclass(frozen=True)
class ToolCallRequest:
    """One tool call as the model wrote it.

    Attributes:
        id: Its id; ``None`` if the server left it out.
        name: The function's name.
        arguments: Its arguments, a JSON string (still to be checked: a model's
            bad JSON goes back to the model, not to the user).

    """

    id: str | None
    name: str
    arguments: str


@dataclasses.dataclass(frozen=True)
class ModelTurn:
    """The first choice of a chat completion.

    Attributes:
        content: The assistant's text (``None`` if it sent none).
        tool_calls: The tool calls it asked for, in order.
        usage: Tokens this request used; ``None`` if the server does not say.

    """

    content: str | None
    tool_calls: list[ToolCallRequest]
    usage: dict[str, int] | None


def read_completion(body: str, content_type: str = '') -> ModelTurn:
    """The turn in the body of a chat completion response.

    Args:
        body: The response body as the server sent it.
        content_type: Its ``Content-Type`` header, shown if the body is not JSON.

    Raises:
        ModelReplyError: Naming what is missing or of the wrong type.

    """
    completion = _json('the chat request', body, content_type)
    if not isinstance(completion, dict):
        raise _bad('a chat completion that is not a JSON object', completion)
    choices = completion.get('choices')
    if not isinstance(choices, list) or not choices:
        raise _bad('a chat completion with no choices', completion)
    choice = choices[0]
    message = choice.get('message') if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise _bad('a chat completion whose choices[0].message is not an object', choice)
    content = message.get('content')
    if content is not None and not isinstance(content, str):
        raise _bad('message content that is not a string', content)
    raw_calls = message.get('tool_calls')
    if raw_calls is None:
        raw_calls = []
    if not isinstance(raw_calls, list):
        raise _bad('message tool_calls that are not a list', raw_calls)
    calls = [_tool_call(index, raw) for index, raw in enumerate(raw_calls)]
    return ModelTurn(content, calls, _usage(completion.get('usage')))


def read_model_list(body: str, content_type: str = '') -> list[str]:
    """The model names in the body of a ``GET /models`` response.

    Raises:
        ModelReplyError: If it is not a JSON list of models.

    """
    listing = _json('GET /models', body, content_type)
    data = listing.get('data') if isinstance(listing, dict) else None
    if not isinstance(data, list):
        raise _bad('a GET /models answer that is not a list of models', listing)
    names = []
    for model in data:
        name = model.get('id') if isinstance(model, dict) else None
        if not isinstance(name, str):
            raise _bad('a GET /models entry without a model id', model)
        names.append(name)
    return names


def _json(request: str, body: str, content_type: str) -> Any:
    """The body, parsed; a body that is empty or not JSON is refused."""
    if not body.strip():
        raise ModelReplyError(f'answered {request} with an empty body')
    try:
        return json.loads(body)
    except ValueError:
        # Say what came: an HTML page (a proxy's, a web UI's) means another URL was meant.
        kind = f' ({content_type.partition(";")[0].strip()})' if content_type else ''
        raise ModelReplyError(
            f'answered {request} with a body that is not JSON{kind}: {quoted(body)}'
        ) from None


def _tool_call(index: int, raw: Any) -> ToolCallRequest:
    """One entry of ``tool_calls``; its arguments as a string (servers send objects too)."""
    function = raw.get('function') if isinstance(raw, dict) else None
    if not isinstance(function, dict):
        raise _bad(f'tool_calls[{index}] without a function object', raw)
    name = function.get('name')
    if not isinstance(name, str):
        raise _bad(f'tool_calls[{index}] whose function name is not a string', name)
    arguments = function.get('arguments')
    if arguments is None:
        arguments = ''
    elif not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    call_id = raw.get('id')
    call_id = call_id if isinstance(call_id, str) and call_id else None
    return ToolCallRequest(call_id, name, arguments)


def _usage(usage: Any) -> dict[str, int] | None:
    """The token counts; ``None`` if the server sent none."""
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise _bad('usage that is not an object', usage)
    counts = {}
    for key in USAGE_KEYS:
        value = usage.get(key)
        if value is None:
            continue
        # bool is an int to Python, and 1.5 tokens is not a count either.
        integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not integral:
            raise _bad(f'usage.{key} that is not a number of tokens', value)
        counts[key] = int(value)
    return counts


def _bad(what: str, value: Any) -> ModelReplyError:
    """The error for a reply of the wrong shape, quoting the part that is wrong."""
    return ModelReplyError(f'sent {what}: {quoted(value)}')
