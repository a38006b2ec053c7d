"""tick.json, the chart's side and the tick's side of one contract (job/shardscore/k8s/tickconfig.py, FIELDS): the
chart renders exactly the fields the tick documents, and the tick's own loader reads what the chart renders."""

from __future__ import annotations

import pytest

import chartlib as c

tickconfig = pytest.importorskip("shardscore.k8s.tickconfig",
                                 reason="the shardscore job package is not installed (make venv)")

CRONJOB = c.CI_DIR / "cronjob-values.yaml"


@pytest.mark.parametrize("sets", [[], ["cronJob.deadlineSeconds=3600", "cronJob.waitForCompletion=false",
                                       "job.output=s3://shardscore/scheduled/", "job.extraArgs={--overlap,on}"]],
                         ids=["ci", "every-field-set"])
def test_the_chart_renders_the_fields_the_tick_documents_and_its_loader_reads_them(tmp_path, sets):
    docs = c.render([CRONJOB], sets)
    data = c.tick_config(docs)
    assert set(data) == set(tickconfig.FIELDS), "cronjob.yaml and tickconfig.FIELDS disagree on tick.json's fields"
    path = tmp_path / "tick.json"
    path.write_text(next(d for d in c.of_kind(docs, "ConfigMap") if "tick.json" in d["data"])["data"]["tick.json"])
    cfg = tickconfig.TickConfig.from_file(str(path))  # what `shardscore tick --config` runs in the pod
    assert cfg.argv[cfg.output_arg_index - 1] == "--output" and cfg.output == "s3://shardscore/scheduled"
    assert cfg.argv[cfg.output_arg_index] == data["output"] + ("/" if sets else "")
    assert (cfg.wait, cfg.deadline_seconds) == ((False, 3600) if sets else (True, None))
