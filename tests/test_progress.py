"""Progress bars: drawn on a terminal with stage, ETA and speed; silent with --quiet, in CI and off a terminal."""
import io

import pytest
import torch
from rich.console import Console

from aidkd import progress


@pytest.fixture
def terminal(monkeypatch):
    """stderr as a terminal that writes into a buffer."""
    buf = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=buf, force_terminal=True, width=160))
    monkeypatch.delenv("CI", raising=False)
    progress.set_quiet(False)
    yield buf
    progress.set_quiet(False)


def test_when_bars_are_drawn(terminal, monkeypatch):
    assert progress.progress_enabled()
    assert not progress.progress_enabled(quiet=True)
    progress.set_quiet()
    assert not progress.progress_enabled()
    progress.set_quiet(False)
    monkeypatch.setenv("CI", "true")
    assert not progress.progress_enabled()
    monkeypatch.delenv("CI")
    monkeypatch.setattr(progress, "console", Console(file=io.StringIO()))  # not a terminal
    assert not progress.progress_enabled()


def test_stage_bar_shows_stage_eta_and_speed(terminal):
    with progress.StageProgress(True, lambda stage: 4) as bar:
        bar.hook("teacher", 0, {"train.img_per_s": 1234.0})
        bar.hook("teacher", 1, {"train.img_per_s": 1234.0})
        bar.progress.refresh()
        bar.hook("vanilla-s0", 0, {"train.img_per_s": 99.0})
        bar.progress.refresh()
    out = terminal.getvalue()
    assert "stage teacher" in out and "stage vanilla-s0" in out and "ETA" in out and "img/s" in out
    assert "1234 img/s" in out and "2/4" in out
    quiet = progress.StageProgress(False, lambda s: 4)
    with quiet:
        quiet.hook("teacher", 0, {})  # disabled: nothing drawn, nothing raised
    assert quiet.progress is None


def test_track_images_counts_images_and_passes_batches_through(terminal):
    batches = [(torch.zeros(8, 1), torch.zeros(8)) for _ in range(3)]
    assert list(progress.track_images(batches, "cache", True)) == batches
    out = terminal.getvalue()
    assert "cache" in out and "img/s" in out
    terminal.truncate(0)
    assert list(progress.track_images(iter(batches), "cache", False)) == batches
    assert terminal.getvalue() == ""


def test_job_bar(terminal):
    assert list(progress.track_jobs(["a", "b"], "suite", True)) == ["a", "b"]
    assert "jobs/min" in terminal.getvalue() and "suite" in terminal.getvalue()


def test_teacher_cache_and_adaptation_draw_their_bars(terminal):
    from aidkd.aid.adapt import AIDParams, adapt_teacher
    from aidkd.teachers.views import CacheSpec, build_view_logits, stored_view_table
    from aidkd.methods import Batch
    from aidkd.models import create_model

    torch.manual_seed(0)
    teacher = create_model("cnn_tiny", num_classes=4, in_chans=1, input_hw=8)
    student = create_model("cnn_tiny", num_classes=4, in_chans=1, input_hw=8)
    x, y = torch.randn(32, 1, 8, 8), torch.arange(32) % 4
    batches = [Batch(x[i:i + 16], y[i:i + 16], torch.arange(i, i + 16)) for i in (0, 16)]

    spec = CacheSpec(mode="views", padding=1, flip=True)
    images = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8)
    stored = build_view_logits(teacher, images, (0.5,), (0.25,), stored_view_table(32, spec), spec,
                               torch.device("cpu"))
    assert stored["logits"].shape == (32, 18, 4)
    assert "teacher view cache" in terminal.getvalue()
    adapt_teacher(teacher, student, batches, batches, AIDParams(epochs=1, K=4), "cpu")
    assert "AID adaptation, epoch 1/1" in terminal.getvalue()


def test_bars_nest_inside_a_stage_bar(terminal):
    """The adaptation / cache / epoch bars run inside a pipeline stage, under the stage bar."""
    batch = (torch.zeros(4, 1), torch.zeros(4))
    with progress.StageProgress(True, lambda s: 2) as bar:
        bar.hook("adapt", 0, {})
        assert len(list(progress.track_images([batch, batch], "AID adaptation, epoch 1/1", True))) == 2
        bar.hook("aid-kd-s0", 0, {"train.img_per_s": 10.0})
    out = terminal.getvalue()
    assert "AID adaptation, epoch 1/1" in out and "stage adapt" in out
