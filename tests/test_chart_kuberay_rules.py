from __future__ import annotations

import pytest

import chartlib as c
import kuberay_rejects as kr


REFUSED = [r for r in kr.REJECTIONS if r.chart]


@pytest.mark.parametrize("rejection", REFUSED, ids=[r.id for r in REFUSED])
def test_the_chart_refuses_what_kuberay_rejects(rejection):
    """The chart's half of each rule; tests/kuberay_rejects.py has the operator's (its hand-written object)."""
    ref = rejection.chart
    extra = [a for j in ref.set_json for a in ("--set-json", j)]
    for helm in filter(None, [None, c.helm3_bin()]):
        err = c.render_error(list(ref.values), list(ref.sets), helm=helm, extra=extra)
        missing = [n for n in ref.needles if n not in err]
        assert not missing, f"the refusal does not name {missing}:\n{err}"


def test_every_kuberay_rejection_has_a_chart_half_and_a_well_formed_object():
    ids = [r.id for r in kr.REJECTIONS]
    assert len(ids) == len(set(ids))
    names = [r.manifest["metadata"]["name"] for r in kr.REJECTIONS]
    assert len(names) == len(set(names)), "each hand-written object gets its own name"
    chart_tests = c.chart_test_names()
    for r in kr.REJECTIONS:
        assert r.rejected_by in ("apiserver", "operator", "pod-security"), r.id
        assert r.message and r.kuberay, r.id
        assert r.chart or r.chart_note, f"{r.id}: neither a chart refusal nor a note on how the chart avoids it"
        if r.chart_note:  # the note names the test that shows the chart's half
            named = [w for w in r.chart_note.replace(",", " ").split() if w.startswith("test_")]
            assert named and set(named) <= chart_tests, f"{r.id}: {r.chart_note}"
        if r.rejected_by == "operator":
            assert r.event_reason.startswith("Invalid"), r.id
        # The API server must store it (or refuse it for a CEL rule only, not evaluated here): the schema accepts
        # it, so it is the operator's rule (or the CEL rule, or the admission of its pods) that rejects it. Names
        # are the operator's to check (ValidateRayJobMetadata, ValidateRayCronJobSpec).
        errors = c.crd_errors(r.manifest, metadata=False)
        assert not errors and not c.pruned_fields(r.manifest), (r.id, errors)
    kinds = {r.manifest["kind"] for r in kr.REJECTIONS}
    assert kinds == {"RayJob", "RayCluster", "RayCronJob"}
