from __future__ import annotations

import pytest
import yaml

import chartlib as c
from chartlib import CI_FILES, CI_IDS


def test_ci_values_files_cover_every_mode():
    assert {"cpu-values", "gpu-values", "ephemeral-values", "cronjob-values", "raycronjob-values"} <= set(CI_IDS)



@pytest.mark.parametrize("values", CI_FILES, ids=CI_IDS)
def test_helm_lint_strict(values):
    for flags in ([], ["--strict"]):
        proc = c.run_helm(["lint", str(c.CHART), "-f", str(values), *flags])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("values", CI_FILES, ids=CI_IDS)
def test_helm3_renders_the_same_as_helm4(values):
    helm3 = c.helm3_bin()
    if not helm3:
        pytest.skip("Helm 3 not installed (scripts/install-helm.sh puts it at .tools/bin/helm3)")
    assert c.run_helm(["version", "--short"], helm3).stdout.startswith("v3.")
    lint = c.run_helm(["lint", "--strict", str(c.CHART), "-f", str(values)], helm3)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert c.render([values], helm=helm3) == c.render([values])


def test_helm3_renders_the_advertised_combinations_the_same(advertised):
    helm3 = c.helm3_bin()
    if not helm3:
        pytest.skip("Helm 3 not installed (scripts/install-helm.sh puts it at .tools/bin/helm3)")
    for name, sets, set_json, release in c.ADVERTISED:
        assert c.render_advertised(sets, set_json, release, helm=helm3) == advertised[name], name


def test_chart_metadata():
    chart = yaml.safe_load((c.CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "shardscore"
    assert (c.CHART / "values.schema.json").is_file() and (c.CHART / "templates" / "NOTES.txt").is_file()


def test_every_value_is_commented():
    """values.yaml: a comment right above every key (Helm convention, and what a platform engineer reads), except
    inside a value documented as a whole (a `# --` comment above an object such as podSecurityContext)."""
    lines = (c.CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, documented as a whole) of the enclosing keys
    uncommented = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- ") or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        stack = [(n, unit) for n, unit in stack if n < indent]
        top = i
        while top and lines[top - 1].strip().startswith("#"):
            top -= 1
        comment = lines[top].strip() if top < i else ""
        if not any(unit for _, unit in stack) and not comment:
            uncommented.append(line)
        stack.append((indent, comment.startswith("# --")))
    assert not uncommented, "values without a comment above them:\n" + "\n".join(uncommented)
