"""A scripted OpenAI-compatible chat completions server on 127.0.0.1, for tests.

It speaks the real wire format (``POST /v1/chat/completions``, ``GET
/v1/models``), so the real ``openai`` client talks to it. Each chat request
gets the script's next reply; every request body (and its ``Authorization``
header) is recorded for the test to check what the client sent.

    with ScriptedOpenAI([tool_calls(('mock_md', {'temperature': 300})), text('done')]) as server:
        ... --llm server.url --model scripted ...
        server.requests[1]['messages'][-1]  # the tool message with the result

A script item is a reply (``tool_calls(...)``, ``text(...)``), or a function of
the request body and its index that returns one. After the last item, the
last one is repeated if ``repeat`` is set, else the server answers 500.

A [`Raw`][tests.scripted_openai.Raw] reply is sent byte for byte (status, body and
content type as given), to script a server that answers wrongly: HTML, a
truncated body, an empty 200, a completion of the wrong shape.
"""

from __future__ import annotations

import dataclasses
import http.server
import itertools
import json
import threading
import time
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Raw:
    """A reply sent exactly as given, not wrapped in a ``chat.completion``."""

    body: bytes
    status: int = 200
    content_type: str = 'application/json'


Reply = dict[str, Any]
ScriptItem = Reply | Raw | Callable[[dict[str, Any], int], Reply | Raw]

MODEL = 'scripted'
USAGE = {'prompt_tokens': 100, 'completion_tokens': 10, 'total_tokens': 110}

_ids = itertools.count(1)


def tool_calls(*calls: tuple[str, Any], content: str | None = None) -> Reply:
    """An assistant turn with these ``(name, arguments)`` tool calls.

    Arguments that are not a string are sent as JSON; a string is sent as is
    (to script malformed JSON).
    """
    return {
        'content': content,
        'tool_calls': [
            {
                'id': f'call_{next(_ids)}',
                'type': 'function',
                'function': {
                    'name': name,
                    'arguments': arguments if isinstance(arguments, str) else json.dumps(arguments),
                },
            }
            for name, arguments in calls
        ],
    }


def text(content: str) -> Reply:
    """An assistant turn that answers without tool calls."""
    return {'content': content}


def as_is(body: Any) -> Raw:
    """``body`` as the whole JSON answer (e.g. a completion with a field of the wrong type)."""
    return Raw(json.dumps(body).encode())


def completion(reply: Reply, model: str = MODEL, usage: dict[str, int] | None = USAGE) -> Reply:
    """A ``chat.completion`` object as OpenAI sends it."""
    message: dict[str, Any] = {'role': 'assistant', 'content': reply.get('content')}
    if reply.get('tool_calls'):
        message['tool_calls'] = reply['tool_calls']
    body: dict[str, Any] = {
        'id': f'chatcmpl-{next(_ids)}',
        'object': 'chat.completion',
        'created': int(time.time()),
        'model': model,
        'choices': [
            {
                'index': 0,
                'message': message,
                'logprobs': None,
                'finish_reason': 'tool_calls' if reply.get('tool_calls') else 'stop',
            },
        ],
    }
    if usage is not None:
        body['usage'] = usage
    return body


class ScriptedOpenAI:
    """The server; a context manager that starts it on a free port and stops it.

    Args:
        script: Replies to the chat requests, in order.
        repeat: Repeat the last item once the script is done.
        delay: Seconds to wait before each chat reply.
        trickle: Seconds between the bytes of each chat reply's body (a server that
            keeps the connection alive but never finishes).
        models: What ``GET /v1/models`` lists.
        models_reply: Sent for ``GET /v1/models`` instead of the list.
        models_trickle: Seconds between the bytes of the ``GET /v1/models`` answer.

    """

    def __init__(
        self,
        script: Sequence[ScriptItem],
        *,
        repeat: bool = False,
        delay: float = 0.0,
        trickle: float = 0.0,
        models: Sequence[str] = (MODEL,),
        models_reply: Raw | None = None,
        models_trickle: float = 0.0,
    ) -> None:
        self.script = list(script)
        self.repeat = repeat
        self.delay = delay
        self.trickle = trickle
        self.models = list(models)
        self.models_reply = models_reply
        self.models_trickle = models_trickle
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        """Each chat request's headers, names in lower case."""
        self.lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Base URL for the client (``--llm``)."""
        return f'http://127.0.0.1:{self._server.server_address[1]}/v1'

    @property
    def chats(self) -> list[dict[str, Any]]:
        """The chat completion request bodies, in order."""
        with self.lock:
            return list(self.requests)

    def __enter__(self) -> ScriptedOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _reply(self, body: dict[str, Any]) -> Reply | Raw | None:
        with self.lock:
            index = len(self.requests)
            self.requests.append(body)
        if index >= len(self.script):
            if not self.repeat or not self.script:
                return None
            item = self.script[-1]
        else:
            item = self.script[index]
        reply = item(body, index) if callable(item) else item
        if isinstance(reply, Raw):
            return reply
        return completion(reply, model=body.get('model', MODEL))

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, data: Any, trickle: float = 0.0) -> None:
                raw = data if isinstance(data, Raw) else Raw(json.dumps(data).encode(), status)
                payload = raw.body
                self.send_response(raw.status)
                self.send_header('Content-Type', raw.content_type)
                self.send_header('Content-Length', str(len(payload)))
                self.end_headers()
                try:
                    if not trickle:
                        self.wfile.write(payload)
                    for index in range(len(payload) if trickle else 0):
                        self.wfile.write(payload[index : index + 1])
                        self.wfile.flush()
                        time.sleep(trickle)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a timeout test)

            def do_GET(self) -> None:
                if self.path.rstrip('/') == '/v1/models' and server.models_reply is not None:
                    self._send(200, server.models_reply, trickle=server.models_trickle)
                elif self.path.rstrip('/') == '/v1/models':
                    models = [
                        {'id': m, 'object': 'model', 'owned_by': 'test'} for m in server.models
                    ]
                    listing = {'object': 'list', 'data': models}
                    self._send(200, listing, trickle=server.models_trickle)
                else:
                    self._send(404, {'error': {'message': f'no route {self.path}'}})

            def do_POST(self) -> None:
                length = int(self.headers.get('Content-Length') or 0)
                body = json.loads(self.rfile.read(length) or b'{}')
                if self.path.rstrip('/') != '/v1/chat/completions':
                    self._send(404, {'error': {'message': f'no route {self.path}'}})
                    return
                with server.lock:
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                if server.delay:
                    time.sleep(server.delay)
                reply = server._reply(body)
                if reply is None:
                    self._send(500, {'error': {'message': 'the script is over'}})
                else:
                    self._send(200, reply, trickle=server.trickle)

        return Handler
