"""Private files: written whole, by a name nobody can guess, never through a planted symlink."""

from __future__ import annotations

import os
import pathlib
import stat
import threading

import pytest

from actors.common.private import write_private

pytestmark = pytest.mark.timeout(30)


def test_a_symlink_planted_at_the_path_is_replaced_not_written_through(tmp_path: pathlib.Path):
    victim = tmp_path / 'victim'
    victim.write_text('keep me')
    target = tmp_path / 'layout.json'
    target.symlink_to(victim)
    write_private(target, '{"directors": {}}')
    assert victim.read_text() == 'keep me'
    assert not target.is_symlink() and target.read_text() == '{"directors": {}}'
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_part_files_have_names_nobody_can_plant_in_advance(tmp_path: pathlib.Path):
    victim = tmp_path / 'victim'
    victim.write_text('keep me')
    # The name the old code used for this process and thread.
    guess = tmp_path / f'.file.{os.getpid()}.{threading.get_ident()}.part'
    guess.symlink_to(victim)
    write_private(tmp_path / 'file', b'data')
    assert victim.read_text() == 'keep me' and (tmp_path / 'file').read_bytes() == b'data'
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(['victim', 'file', guess.name])


def test_threads_writing_one_file_each_leave_a_whole_file(tmp_path: pathlib.Path):
    path = tmp_path / 'nodefile'
    texts = [f'{i}\n' * 1000 for i in range(8)]
    threads = [threading.Thread(target=write_private, args=(path, t)) for t in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert path.read_text() in texts
    assert [p.name for p in tmp_path.iterdir()] == ['nodefile']  # no part file left
