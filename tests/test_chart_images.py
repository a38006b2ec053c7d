from __future__ import annotations

import pytest

import chartlib as c
from chartlib import CPU, IMAGE, all_renders


def test_no_image_is_unpinned(rendered, advertised):
    seen = set()
    for where, docs in all_renders(rendered, advertised).items():
        for d in docs:
            for image in c.images(d):
                assert c.image_is_pinned(image), f"{where}: {d['kind']} {d['metadata']['name']}: {image}"
                seen.add(image)
    assert seen == {IMAGE, "shardscore:0.1.0-cu128"}
    assert not c.image_is_pinned("shardscore:latest") and not c.image_is_pinned("registry:5000/shardscore")
    assert c.image_is_pinned("registry:5000/shardscore:1.0") and c.image_is_pinned("shardscore@sha256:" + "0" * 64)


@pytest.mark.parametrize("sets", [["image.tag=latest"], ["cluster.gpuWorkers.enabled=true",
                                                         "cluster.gpuWorkers.image.tag=latest"]])
def test_latest_is_refused(sets):
    err = c.render_error([CPU], sets)
    assert "latest" in err and "tag" in err
