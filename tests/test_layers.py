"""The package's layering: a functional core that knows nothing of Ray or Kubernetes, and no import cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import shardscore

PACKAGE = Path(shardscore.__file__).parent

#: The functional core: planning, the commit protocol, outputs, batch scoring, the model contract, and what a run
#: checks and records. The Ray layer (ray_*.py), the run's orchestration (run.py), the CLI and shardscore.k8s are not.
CORE = ("checks", "commit", "config", "errors", "folder", "iceberg", "lease", "manifest", "markers", "model", "output",
        "pipeline", "planning", "progress", "sample_data", "schema_rule", "scoring", "storage", "table_output", "templates")


def test_the_core_imports_nothing_of_ray_or_kubernetes():
    code = ("import sys\n"
            + "".join(f"import shardscore.{name}\n" for name in CORE)
            + "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'kubernetes'}))\n"
            + "print(sorted(m for m in sys.modules if m.startswith(('shardscore.ray_', 'shardscore.k8s', "
            + "'shardscore.run'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["[]", "[]"], out


def _imports(path: Path) -> set[str]:
    """The package's modules this module imports, wherever the import statement is (a function's body included)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.update({base, *(f"{base}.{alias.name}" for alias in node.names)})
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_package_has_no_import_cycle():
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
    graph = {name: sorted(m for m in _imports(path) if m in modules and m != name) for name, path in modules.items()}

    def cycle_from(start: str, path: list[str]) -> list[str] | None:
        for nxt in graph[path[-1]]:
            if nxt == start:
                return [*path, start]
            if nxt not in path and (found := cycle_from(start, [*path, nxt])):
                return found
        return None

    cycles = [c for name in sorted(graph) if (c := cycle_from(name, [name]))]
    assert not cycles, " ; ".join(" -> ".join(c) for c in cycles)
