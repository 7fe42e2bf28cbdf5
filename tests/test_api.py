"""The Python API at the top of the package, the loss exports, keyword-only decompositions, and docs/python_api.md
run as written."""
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import aidkd
from aidkd import losses

DOC = Path(__file__).resolve().parents[1] / "docs" / "python_api.md"


def test_top_level_names_are_the_real_objects():
    from aidkd.aid.adapt import adapt_teacher
    from aidkd.aid.analysis import analyze
    from aidkd.aid.pipeline import run_pipeline
    from aidkd.aid.split import split_decomposition
    from aidkd.config import load_config
    from aidkd.engine import evaluate, train
    from aidkd.losses.decomposition import kd_decomposition
    from aidkd.methods.base import METHODS
    from aidkd.models import MODELS, create_model, list_models

    expected = {"create_model": create_model, "list_models": list_models, "load_config": load_config, "train": train,
                "evaluate": evaluate, "kd_decomposition": kd_decomposition, "split_decomposition": split_decomposition,
                "analyze": analyze, "adapt_teacher": adapt_teacher, "run_pipeline": run_pipeline, "METHODS": METHODS,
                "MODELS": MODELS}
    for name, obj in expected.items():
        assert getattr(aidkd, name) is obj, name
        assert name in aidkd.__all__
    assert set(aidkd.__all__) <= set(dir(aidkd))
    with pytest.raises(AttributeError, match="no_such_name"):
        aidkd.no_such_name  # noqa: B018


def test_import_is_lazy():
    out = subprocess.run([sys.executable, "-c", "import sys, aidkd; print('torch' in sys.modules)"],
                         check=False, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_losses_export_every_public_function_and_module():
    pkg = Path(losses.__file__).parent
    for f in sorted(pkg.glob("*.py")):
        if f.name == "__init__.py":
            continue
        mod = __import__(f"aidkd.losses.{f.stem}", fromlist=["_"])
        public = [n for n, o in vars(mod).items() if not n.startswith("_")
                  and (inspect.isfunction(o) or inspect.isclass(o)) and o.__module__ == mod.__name__]
        assert public, f.name
        for n in public:
            if n == "KLReduction":
                continue
            assert getattr(losses, n, None) is getattr(mod, n), f"aidkd.losses does not export {f.stem}.{n}"
            assert n in losses.__all__


def test_decompositions_of_logits_refuse_positional_arguments():
    zs, zt, y = torch.randn(6, 4), torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    with pytest.raises(TypeError):
        aidkd.kd_decomposition(zs, zt, y)
    with pytest.raises(TypeError):
        aidkd.split_decomposition_from_logits(zt, zs, y)
    a = aidkd.kd_decomposition(student_logits=zs, teacher_logits=zt, labels=y, temperature=2.0)
    b = aidkd.split_decomposition_from_logits(teacher_logits=zt, student_logits=zs, labels=y, temperature=2.0)
    # the same KL(teacher || student) both ways, whatever the order the keywords are written in
    assert float(a.kd) == pytest.approx(b.kd, rel=1e-5)
    assert float(a.cs) == pytest.approx(b.cs, rel=1e-5)
    kl = (torch.softmax(zt.double() / 2, 1) * (torch.log_softmax(zt.double() / 2, 1)
                                               - torch.log_softmax(zs.double() / 2, 1))).sum(1).mean() * 4
    assert float(a.kd) == pytest.approx(float(kl), rel=1e-5)


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_python_api_doc_session_runs(tmp_path, monkeypatch, capsys):
    """Every ```python block of docs/python_api.md, in order, in one namespace, in a fresh folder."""
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "python_api_doc"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{DOC.name}[block {i}]", "exec"), ns)  # noqa: S102  (the doc is ours)
    out = capsys.readouterr().out
    # the session trained, distilled, decomposed and adapted for real
    assert (tmp_path / "runs" / "api" / "teacher" / "summary.json").is_file()
    assert (tmp_path / "runs" / "api" / "student_kd" / "checkpoints" / "last.pt").is_file()
    before, after, report = ns["before"], ns["after"], ns["report"]
    assert before.kd == pytest.approx(before.cs + before.ic, rel=1e-6)
    assert after.kd == pytest.approx(after.cs + after.ic, rel=1e-6)
    assert after.ic != before.ic
    assert report.teacher_acc_after > 20
    assert ns["t_summary"]["last_test_acc"] > 50  # 4 epochs on digits
    assert "one batch: L_KD" in out and "test split: L_KD" in out
    assert (tmp_path / "runs" / "api_pipeline" / "results.json").is_file()
