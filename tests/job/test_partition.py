from __future__ import annotations

import pathlib
import re

import pytest

from actors.common.errors import ConfigurationError
from actors.job.partition import dedupe
from actors.job.partition import discover_nodes
from actors.job.partition import expand_slurm_hostlist
from actors.job.partition import parse_sizes
from actors.job.partition import read_nodefile
from actors.job.partition import simulated_nodes
from actors.job.partition import split_nodes
from actors.job.partition import write_partitions

pytestmark = pytest.mark.timeout(10)


def test_dedupe_keeps_first_seen_order():
    assert dedupe(['b', 'a', 'b', ' a ', '', 'c']) == ['b', 'a', 'c']


def test_pbs_nodefile_repeats_hosts_once_per_rank(tmp_path: pathlib.Path):
    nodefile = tmp_path / 'nodes'
    nodefile.write_text('x1\nx1\nx1\nx2\nx2\n\n# comment\nx3\n')
    assert read_nodefile(nodefile) == ['x1', 'x2', 'x3']


def test_missing_and_empty_nodefiles_are_clear(tmp_path: pathlib.Path):
    with pytest.raises(ConfigurationError, match='does not exist'):
        read_nodefile(tmp_path / 'nope')
    empty = tmp_path / 'empty'
    empty.write_text('\n\n')
    with pytest.raises(ConfigurationError, match='lists no host'):
        read_nodefile(empty)
    with pytest.raises(ConfigurationError, match='cannot be read'):
        read_nodefile(tmp_path)


@pytest.mark.parametrize(
    ('expression', 'expected'),
    [
        ('nid[001-004,007]', ['nid001', 'nid002', 'nid003', 'nid004', 'nid007']),
        ('x1000c0s0b0n0,x1000c0s0b1n[0-1]', ['x1000c0s0b0n0', 'x1000c0s0b1n0', 'x1000c0s0b1n1']),
        ('node1', ['node1']),
        ('a[1-2],a[2-3]', ['a1', 'a2', 'a3']),
    ],
)
def test_slurm_hostlists_expand(expression: str, expected: list[str]):
    assert expand_slurm_hostlist(expression) == expected


def test_bad_slurm_hostlist():
    with pytest.raises(ConfigurationError, match='not a valid Slurm hostlist'):
        expand_slurm_hostlist('nid[001-')


def test_discover_precedence(tmp_path: pathlib.Path):
    pbs = tmp_path / 'pbs'
    pbs.write_text('p1\np2\n')
    explicit = tmp_path / 'explicit'
    explicit.write_text('e1\n')
    env = {'PBS_NODEFILE': str(pbs), 'SLURM_JOB_NODELIST': 's[1-3]'}
    assert discover_nodes(nodes_file=str(explicit), environ=env)[0] == ['e1']
    assert discover_nodes(simulate=3, environ=env)[0] == simulated_nodes(3)
    assert discover_nodes(environ=env) == (['p1', 'p2'], discover_nodes(environ=env)[1])
    assert discover_nodes(environ=env)[1].kind == 'pbs'
    nodes, source = discover_nodes(environ={'SLURM_JOB_NODELIST': 's[1-3]'})
    assert nodes == ['s1', 's2', 's3']
    assert source.kind == 'slurm'
    nodes, source = discover_nodes(environ={})
    assert len(nodes) == 4
    assert source.kind == 'simulated'


def test_split_even_uneven_and_explicit():
    nodes = [f'n{i}' for i in range(5)]
    assert split_nodes(nodes[:4], count=2) == [['n0', 'n1'], ['n2', 'n3']]
    assert split_nodes(nodes, count=2) == [['n0', 'n1', 'n2'], ['n3', 'n4']]
    assert split_nodes(nodes, count=3) == [['n0', 'n1'], ['n2', 'n3'], ['n4']]
    assert split_nodes(nodes[:4], sizes=[1, 3]) == [['n0'], ['n1', 'n2', 'n3']]
    assert split_nodes(nodes[:4]) == [['n0', 'n1'], ['n2', 'n3']]


@pytest.mark.parametrize(
    ('kwargs', 'message'),
    [
        ({'count': 5}, 'more than the 4 node'),
        ({'count': 0}, 'at least 1'),
        ({'sizes': [1, 2]}, 'add up to 3 but the job has 4'),
        ({'sizes': [2, 3]}, 'add up to 5'),
        ({'sizes': [4, 0]}, 'must be'),
        ({'count': 2, 'sizes': [2, 2]}, 'not both'),
    ],
)
def test_impossible_splits(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        split_nodes(['a', 'b', 'c', 'd'], **kwargs)


def test_parse_sizes():
    assert parse_sizes('1,3') == [1, 3]
    with pytest.raises(ConfigurationError, match="'x' is not an integer"):
        parse_sizes('1,x')
    with pytest.raises(ConfigurationError, match='>= 1'):
        parse_sizes('2,-1')


def test_partitions_are_disjoint_and_get_own_nodefiles(tmp_path: pathlib.Path):
    parts = write_partitions(split_nodes(simulated_nodes(7), sizes=[3, 1, 3]), tmp_path)
    seen: set[str] = set()
    for part in parts:
        assert not seen & set(part.nodes)
        seen |= set(part.nodes)
        assert pathlib.Path(part.nodefile).read_text().split() == list(part.nodes)
        assert pathlib.Path(part.nodefile).is_relative_to(tmp_path)
    assert seen == set(simulated_nodes(7))
    assert len({p.nodefile for p in parts}) == 3


@pytest.mark.parametrize(
    ('line', 'shown'),
    [('node a', "'node a'"), ('n1 slots=4', "'n1 slots=4'"), ('n1:4', "'n1:4'"), ('-x', "'-x'")],
)
def test_a_nodefile_line_that_is_not_one_host_name_is_refused(
    line: str, shown: str, tmp_path: pathlib.Path
):
    # Once, `node a` ran as host `node` and `n1 slots=4` would have too.
    path = tmp_path / 'nodes'
    path.write_text(f'nid001\n# a comment\n{line}\nnid003  # trailing comment\n')
    with pytest.raises(ConfigurationError, match=rf'line 3: {re.escape(shown)} is not one host'):
        read_nodefile(path)
    path.write_text('nid001\n  nid002  \n10.0.0.7\nx4102c5s0b0n0.hsn.cm.aurora.alcf.anl.gov\n')
    assert read_nodefile(path) == [
        'nid001',
        'nid002',
        '10.0.0.7',
        'x4102c5s0b0n0.hsn.cm.aurora.alcf.anl.gov',
    ]
