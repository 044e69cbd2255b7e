"""``launch.py endpoint-config``: render, check or install a site's endpoint template."""

from __future__ import annotations

import argparse
import sys

from actors.cli.parser import Parser
from actors.common.errors import ConfigurationError
from actors.site.endpoint import endpoint_sites
from actors.site.endpoint import install
from actors.site.endpoint import load_rendered
from actors.site.endpoint import load_template
from actors.site.endpoint import missing_interface
from actors.site.endpoint import parse_assignments
from actors.site.endpoint import render_template


def build_parser() -> Parser:
    """The subcommand's flags."""
    parser = Parser(
        prog='launch.py endpoint-config',
        description=(
            "Render a site's Globus Compute endpoint template with --set values and "
            "check the result with the endpoint's own code (the values against "
            'user_config_schema.json, then the YAML with load_config_yaml); print it. '
            'With --install, copy the template and schema into an endpoint directory.'
        ),
    )
    parser.add_argument(
        '--site',
        required=True,
        help=f'site with an endpoint template: {", ".join(endpoint_sites())}',
    )
    parser.add_argument(
        '--set',
        dest='options',
        action='append',
        default=[],
        metavar='KEY=VALUE',
        help='a user_endpoint_config value (repeat); the schema lists the keys',
    )
    parser.add_argument(
        '--install',
        metavar='DIR',
        help='copy the template and schema into DIR, e.g. ~/.globus_compute/<endpoint name>',
    )
    parser.add_argument(
        '--schema',
        action='store_true',
        help="print the site's schema (the keys --set accepts) instead of rendering",
    )
    return parser


def main(argv: list[str]) -> int:
    """Render (or install) the template; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rendered = _render_or_install(args)
        if rendered is None:
            return 0
        interface = missing_interface(rendered)
        load_rendered(rendered, address='127.0.0.1' if interface else None)
    except ConfigurationError as e:
        parser.exit(2, f'{parser.prog}: error: {e}\n')
    if interface:
        print(
            f'note: interface {interface!r} does not exist on this host; the endpoint '
            'resolves it on its own host (everything else was loaded here)',
            file=sys.stderr,
        )
    if not args.install:
        print(rendered.lstrip('\n'), end='' if rendered.endswith('\n') else '\n')
    return 0


def _render_or_install(args: argparse.Namespace) -> str | None:
    """Print the schema or install the files; the rendered template if there is one to check.

    Raises:
        ConfigurationError: On an unknown site or a refused value.

    """
    template = load_template(args.site)
    if args.schema:
        print(template.schema_path.read_text(), end='')
        return None
    if args.install:
        for path in install(template, args.install):
            print(path)
        if not args.options:
            return None
    options = parse_assignments(args.options, template.schema())
    return render_template(template, options)
