import pytest

from distill._io import atomic_write, write_json


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "summary.json"
    write_json(target, {"accuracy": 0.9})
    before = target.read_bytes()

    def crash_half_way(tmp):
        tmp.write_text('{"accur')
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, crash_half_way)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / "deep" / "x.json"
    write_json(target, {"a": 1})
    write_json(target, {"b": 2})
    assert target.read_text() == '{\n  "b": 2\n}\n'
