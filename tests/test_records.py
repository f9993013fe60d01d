"""Each output's record (Wan_SR/runs/common.py, Records): what --skip_existing keeps and why it
redoes the rest. Small videos, no model."""
import json
import os

import numpy as np
import pytest

from Wan_SR.data import video_io
from Wan_SR.runs import common
from Wan_SR.runs.common import Records, output_state, record_path, settings_digest

A = {"windows": {"window_t": 33}, "fusion": {"alpha": 0.6}, "fps": None}
B = {"windows": {"window_t": 33}, "fusion": {"alpha": 1.0}, "fps": None}


def frames(n=4, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)


def write(records: Records, path, n=4, seed=0):
    """Write ``n`` frames to ``path`` as a run does: through the records' writer."""
    writer = records.open_writer(path, fps=25, size=(16, 16))
    writer.write(frames(n, seed))
    return records.close_writer(writer)


def test_settings_digest_ignores_key_order_and_tuple_vs_list():
    assert settings_digest({"a": (1, 2), "b": 3}) == settings_digest({"b": 3, "a": [1, 2]})
    assert settings_digest(A) != settings_digest(B)


def test_record_is_written_after_the_output_and_names_it(tmp_path):
    records = Records("inference_step_2.py", A)
    out = write(records, tmp_path / "x.mp4")
    rec = json.loads(record_path(out).read_text())
    assert record_path(out) == tmp_path / ".x.mp4.pssr.json"
    assert rec["frames"] == 4 and rec["size"] == out.stat().st_size
    assert rec["run_id"] == records.run_id and rec["settings"] == A
    assert rec["digest"] == settings_digest(A) and rec["output"] == "x.mp4"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".x.mp4.pssr.json", "x.mp4"]


def test_output_state_keeps_only_complete_outputs_recorded_with_the_same_settings(tmp_path):
    digest = settings_digest(A)
    out = tmp_path / "x.mp4"
    assert output_state(out, 4, digest) == common.MISSING
    write(Records("s", A), out)
    assert output_state(out, 4, digest) is None
    assert output_state(out, 4, settings_digest(B)) == common.OTHER_SETTINGS
    assert output_state(out, 5, digest) == common.INCOMPLETE  # the input has 5 frames now
    # another program replaces the file (same name, same frame count): the record is not its
    rec = record_path(out).read_bytes()
    video_io.write_video(out, frames(4, seed=1), fps=25)
    assert output_state(out, 4, digest) == common.CHANGED
    record_path(out).unlink()
    assert output_state(out, 4, digest) == common.NO_RECORD
    record_path(out).write_text("{not json")
    assert output_state(out, 4, digest) == common.NO_RECORD
    # a record of the right file but of other settings
    write(Records("s", B), out)
    assert output_state(out, 4, digest) == common.OTHER_SETTINGS
    assert rec != record_path(out).read_bytes()


def test_check_notes_existing_outputs_it_sends_back(tmp_path):
    records = Records("s", A)
    write(Records("s", B), tmp_path / "old.mp4")
    write(records, tmp_path / "same.mp4")
    assert records.check(tmp_path / "same.mp4", 4) is None
    assert records.check(tmp_path / "new.mp4", 4) == common.MISSING
    assert records.check(tmp_path / "old.mp4", 4) == common.OTHER_SETTINGS
    assert records.redone == {str(tmp_path / "old.mp4"): common.OTHER_SETTINGS}


def test_a_rewrite_keeps_the_old_record_until_the_new_file_replaces_the_output(tmp_path):
    """While a new file is written under its temporary name the old output is untouched and its
    record still vouches for it: a run killed (here: a writer aborted) while rewriting leaves
    the old output valid for its own settings. The record goes when the new file's writer
    closes and the new one follows the replacement."""
    a, b = Records("s", A), Records("s", B)
    out = write(a, tmp_path / "x.mp4")
    old = out.read_bytes()
    writer = b.open_writer(out, fps=25, size=(16, 16))
    assert record_path(out).exists()
    writer.write(frames(2))
    writer.abort()
    assert out.read_bytes() == old and output_state(out, 4, a.digest) is None
    assert output_state(out, 4, b.digest) == common.OTHER_SETTINGS
    writer = b.open_writer(out, fps=25, size=(16, 16))
    writer.write(frames(4))
    b.close_writer(writer)
    assert output_state(out, 4, b.digest) is None


def test_clean_stale_partials_removes_orphan_records_and_dead_partials(tmp_path):
    records = Records("s", A)
    kept = write(records, tmp_path / "kept.mp4")
    gone = write(records, tmp_path / "gone.mp4")
    gone.unlink()
    dead = tmp_path / ".y.999999999.partial.mp4"  # a pid that is not running
    dead.write_bytes(b"x")
    alive = tmp_path / f".z.{os.getppid()}.partial.mp4"  # a running process's: kept
    alive.write_bytes(b"x")
    common.clean_stale_partials(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [kept.name, record_path(kept).name, alive.name])


@pytest.mark.parametrize("status", [0, 1])
def test_run_config_is_written_at_the_start_and_marked_finished(tmp_path, status):
    records = common.start_run("s", A, tmp_path, [tmp_path])
    started = json.loads((tmp_path / "run_config.json").read_text())
    assert started["run_id"] == records.run_id and "finished" not in started
    other = common.start_run("s", B, tmp_path, [tmp_path])  # a later run writes its own
    common.end_run(tmp_path, records, status)  # ... which the earlier one leaves alone
    assert json.loads((tmp_path / "run_config.json").read_text())["run_id"] == other.run_id
    assert "finished" not in json.loads((tmp_path / "run_config.json").read_text())
    common.end_run(tmp_path, other, status)
    done = json.loads((tmp_path / "run_config.json").read_text())
    assert done["exit_status"] == status and "finished" in done and done["settings"] == B
