"""The model identity sees every change of the model's own code, not only of the factory's file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support import base_env

PROBE = ("import sys; from shardscore.model import ModelSpec, load, model_sources; s = load(ModelSpec(sys.argv[1])); "
         "print(s.identity); print(len(model_sources(sys.argv[1].split(':')[0])))")


def identity(root: Path, target: str) -> tuple[str, int]:
    """The identity as a fresh driver computes it (imports start from nothing, as in `shardscore run`)."""
    r = subprocess.run([sys.executable, "-c", PROBE, target], env=base_env(PYTHONPATH=str(root)), cwd=root,
                       capture_output=True, text=True, check=True, timeout=120)
    ident, count = r.stdout.split()
    return ident, int(count)


MODEL = "class Net:\n    columns = ['passenger_count']\n    def __call__(self, batch):\n        return {SCORE}\n"


def test_a_change_to_a_sibling_module_of_a_package_changes_the_identity(tmp_path: Path):
    pkg = tmp_path / "mypkg"
    (pkg / "layers").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "layers" / "__init__.py").write_text("")
    (pkg / "factory.py").write_text("from .layers.net import Net\n\ndef load_model():\n    return Net()\n")
    (pkg / "layers" / "net.py").write_text(MODEL.replace("{SCORE}", "batch"))
    first, count = identity(tmp_path, "mypkg.factory:load_model")
    assert count == 4  # the whole top-level package
    assert identity(tmp_path, "mypkg.factory:load_model")[0] == first  # deterministic
    (pkg / "layers" / "net.py").write_text(MODEL.replace("{SCORE}", "batch * 2"))
    assert identity(tmp_path, "mypkg.factory:load_model")[0] != first


def test_a_change_to_a_project_module_a_top_level_factory_imports_changes_the_identity(tmp_path: Path):
    (tmp_path / "factory.py").write_text("from helpers import Net\n\ndef load_model():\n    return Net()\n")
    (tmp_path / "helpers.py").write_text(MODEL.replace("{SCORE}", "batch"))
    first, count = identity(tmp_path, "factory:load_model")
    assert count == 2  # the factory's module and the project module it imported (not numpy, pyarrow, ...)
    (tmp_path / "helpers.py").write_text(MODEL.replace("{SCORE}", "batch + 1"))
    assert identity(tmp_path, "factory:load_model")[0] != first


def test_shipped_models_cover_the_models_package_not_the_whole_job(tmp_path: Path):
    ident, count = identity(tmp_path, "shardscore.models.dummy:load_model")
    root = Path(__file__).resolve().parents[1] / "job" / "shardscore"
    assert count == 1 + len(list((root / "models").glob("*.py")))
