import pytest

@pytest.fixture(autouse=True)
def _private_teacher_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own teacher view-cache folder, never the user's."""
    monkeypatch.setenv("AIDKD_CACHE", str(tmp_path_factory.mktemp("teacher_views")))


@pytest.fixture
def run_cfg(tmp_path):
    """A tiny, fast config on the embedded digits data (dict form, to be edited by the test)."""

    def make(**sections):
        d = {
            "data": {"name": "digits", "batch_size": 64, "augment": False},
            "model": {"name": "cnn_tiny"},
            "method": {"name": "vanilla"},
            "optim": {"lr": 0.05},
            "sched": {"name": "cosine"},
            "train": {"epochs": 2, "seed": 0, "device": "cpu", "progress": False, "tensorboard": False},
            "output": {"dir": str(tmp_path / "runs"), "name": "r"},
        }
        for k, v in sections.items():
            d.setdefault(k, {}).update(v)
        return d

    return make
