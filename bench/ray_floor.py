"""Ray's own floor on this machine: what any driver on an up cluster pays before its first row, measured alone.

`python ray_floor.py [--model MODULE:FACTORY] [MODULE ...]` (RAY_ADDRESS set) prints one JSON line: seconds from the
process's start to `import ray` done, `ray.init` done, the first no-op task's result (a worker process started for
this job), a second one (a round trip on that warm worker), and one no-op task per CPU at once (every worker the job
needs). With MODULEs, each task imports them first: the floor of any Ray scorer whose workers need pyarrow and the
model's module. With --model, the pattern of the Ray docs' batch prediction, at its best: one task per CPU starts
the workers while the driver loads the model and `ray.put`s it once, then one task per CPU gets the model (marks
`model_put` and `one_task_per_cpu`). bench/run.py times the whole process too, so exit is counted.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

from shardscore.cli import process_age


def since_start() -> float:
    return round(process_age(), 3)


def main(imports: list[str], model: str) -> None:
    marks = {}
    import ray

    marks["import_ray"] = since_start()
    ray.init()
    marks["ray_init"] = since_start()

    @ray.remote(num_cpus=1)
    def noop(*_model) -> int:
        for module in imports:
            importlib.import_module(module)
        return os.getpid()

    slots = int(ray.cluster_resources().get("CPU", 1))
    if model:
        starting = [noop.remote() for _ in range(slots)]
        module, _, factory = model.partition(":")
        model_ref = ray.put(getattr(importlib.import_module(module), factory)())
        marks["model_put"] = since_start()
        ray.get(starting)
        pids = set(ray.get([noop.remote(model_ref) for _ in range(slots)]))
    else:
        ray.get(noop.remote())
        marks["first_task"] = since_start()
        ray.get(noop.remote())
        marks["second_task"] = since_start()
        pids = set(ray.get([noop.remote() for _ in range(slots)]))
    marks["one_task_per_cpu"] = since_start()
    marks["workers"] = len(pids)
    print(json.dumps(marks), flush=True)
    os._exit(0)  # as shardscore's driver ends on a cluster it joined


if __name__ == "__main__":
    args = sys.argv[1:]
    model = args.pop(args.index("--model") + 1) if "--model" in args else ""
    main([a for a in args if a != "--model"], model)
