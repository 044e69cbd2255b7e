"""``launch.py tools --format openai|mcp``: print the tool schemas as a JSON list."""

from __future__ import annotations

import json

from actors.cli.parser import Parser
from actors.director.specs import FORMATS
from actors.director.specs import export


def build_parser() -> Parser:
    """The subcommand's flags."""
    parser = Parser(
        prog='launch.py tools',
        description='Print every tool and Director action as a JSON schema for LLM tool calling.',
    )
    parser.add_argument(
        '--format',
        default='openai',
        choices=FORMATS,
        help='openai: function-calling "tools" list; mcp: MCP tools/list entries (default: openai)',
    )
    return parser


def main(argv: list[str]) -> int:
    """Print the schemas; returns the exit status."""
    args = build_parser().parse_args(argv)
    print(json.dumps(export(args.format), indent=2))
    return 0
