"""Tool schemas (OpenAI and MCP formats) and argument validation; no Directors needed."""

from __future__ import annotations

import json

import jsonschema
import pytest

from actors.client.dispatcher import parse_tool_call
from actors.common.errors import ConfigurationError
from actors.director.specs import export
from actors.director.specs import function_specs
from actors.director.specs import validate_call
from actors.tools.registry import TOOLS
from actors.tools.schemas import validate_arguments

pytestmark = pytest.mark.timeout(60)


def _by_name(items, key):
    return {key(item): item for item in items}


def test_every_tool_and_action_is_exported_in_both_formats():
    names = {spec.name for spec in function_specs()}
    assert set(TOOLS) | {'md_sim', 'md_sim_batch', 'status'} <= names
    openai = _by_name(export('openai'), lambda t: t['function']['name'])
    mcp = _by_name(export('mcp'), lambda t: t['name'])
    assert set(openai) == set(mcp) == names
    for name in names:
        assert openai[name]['type'] == 'function'
        assert openai[name]['function']['parameters'] == mcp[name]['inputSchema']
        assert openai[name]['function']['description'] == mcp[name]['description']
        assert mcp[name]['description']
        # Each schema is itself a valid JSON schema.
        jsonschema.Draft202012Validator.check_schema(mcp[name]['inputSchema'])
    json.dumps(export('openai'))  # JSON-ready


def test_md_schema_comes_from_signature_and_docstring():
    schema = _by_name(export('mcp'), lambda t: t['name'])['ase_md']['inputSchema']
    props = schema['properties']
    assert schema['additionalProperties'] is False
    assert props['steps']['type'] == 'integer' and props['steps']['minimum'] == 0
    assert props['temperature']['type'] == 'number'
    assert props['temperature']['exclusiveMinimum'] == 0
    assert props['ensemble']['enum'] == ['nve', 'langevin']
    assert props['seed']['default'] == 0
    assert props['temperature']['description'].startswith('Initial (and, for langevin')
    assert 'required' not in schema  # every parameter has a default


def test_mpi_tool_schema_has_resources():
    schema = _by_name(export('mcp'), lambda t: t['name'])['ase_md_mpi']
    props = schema['inputSchema']['properties']
    assert {'num_nodes', 'ranks_per_node', 'num_ranks', 'temperature'} <= set(props)
    assert props['num_nodes']['minimum'] == 1
    assert 'MPI' in schema['description']


@pytest.mark.parametrize(
    ('name', 'arguments', 'message'),
    [
        ('ase_md', {'temperature': -5}, 'temperature: -5 is less than or equal to the minimum'),
        ('ase_md', {'steps': 2.0}, "steps: 2.0 is not of type 'integer'"),
        ('ase_md', {'ensemble': 'npt'}, "ensemble: 'npt' is not one of"),
        ('ase_md', {'bogus': 1}, "'bogus' was unexpected.*valid arguments: temperature"),
        ('ase_md', '{"steps": ', 'not valid JSON'),
        ('ase_md', '[1, 2]', 'must be a JSON object, got list'),
        ('mpi_probe', {'num_nodes': 0}, 'num_nodes: 0 is less than the minimum of 1'),
        ('nope', {}, "unknown tool 'nope'; available: ase_md"),
        ('md_sim_batch', {'iterations': 'x'}, 'iterations'),
        ('md_sim', {'tool': 'ase_md', 'temperature': -5}, "'ase_md': temperature: -5"),
        ('md_sim', {'tool': 'nope'}, "tool 'nope' is not one of ase_md"),
        ('md_sim', {'duration': 'long'}, "'mock_md': duration: 'long' is not of type"),
    ],
)
def test_bad_arguments_name_the_problem(name, arguments, message):
    with pytest.raises(ConfigurationError, match=message):
        validate_call(name, arguments)


def test_good_arguments_pass_as_dict_or_json_string():
    assert validate_call('ase_md', '{"temperature": 500, "steps": 10}') == {
        'temperature': 500,
        'steps': 10,
    }
    assert validate_call('status', None) == {}
    with pytest.raises(ConfigurationError, match="unknown tool 'status'"):
        validate_arguments('status', {})


def test_tool_call_shapes():
    short = {'name': 'ase_md', 'arguments': {'steps': 1}}
    openai = {'id': 'call_1', 'type': 'function', 'function': {'name': 'ase_md', 'arguments': '{}'}}
    assert parse_tool_call(short) == ('ase_md', {'steps': 1})
    assert parse_tool_call(openai) == ('ase_md', '{}')
    assert parse_tool_call(json.dumps(short)) == ('ase_md', {'steps': 1})
    for bad, message in [
        ('{not json', 'not valid JSON'),
        ([1], 'must be a JSON object'),
        ({'arguments': {}}, 'needs a "name"'),
    ]:
        with pytest.raises(ConfigurationError, match=message):
            parse_tool_call(bad)


def test_refusals_quote_at_most_a_few_hundred_characters():
    # A model once sent a 10 MB argument; the refusal quoted it whole back to the model,
    # and every later request grew by as much (31 MB).
    huge = 'x' * 10_000_000
    cases = [
        ('mock_md', {'temperature': huge}),
        ('mock_md', {huge[:5000]: 1}),
        ('md_sim', {'tool': huge}),
        ('mock_md', {f'bad{i}': huge[:1000] for i in range(50)}),
    ]
    for name, arguments in cases:
        with pytest.raises(ConfigurationError) as refused:
            validate_call(name, arguments)
        assert len(str(refused.value)) < 1500, (name, len(str(refused.value)))
    with pytest.raises(ConfigurationError, match=r"'xxx.*\.\.\. \(10000000 characters\)"):
        validate_call('mock_md', {'temperature': huge})
