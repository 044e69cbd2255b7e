"""``launch.py mcp``: a Model Context Protocol server in front of the Directors.

It runs where a client runs (a laptop, a login node, the job's lead node) and
reaches the Directors over the Academy exchange like any other client:

- `front`: the Directors it serves, launched for it or attached to by run dir;
- `book`: durable keyed calls (submit, follow, cancel, answer after a restart);
- `entry`: one durable call and where it stands;
- `shapes`: the MCP tool list, its input and output schemas, structured results;
- `outputs`: large values written under the run dir and returned by reference;
- `server`: the MCP request handlers (tools, tasks, resources, progress);
- `readiness`: requests wait for the Directors, which start after the transport;
- `strict`: each incoming message read strictly (what JSON or Python cannot hold back);
- `checked_io`: that check on stdio and HTTP, and every outgoing message made writable;
- `jsonsafe`: results with NaN, infinities, lone surrogates, huge integers as strict JSON;
- `transport`: stdio and Streamable HTTP (loopback by default, a bearer token always).
"""
