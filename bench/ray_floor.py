"""Ray's own floor on this machine: what any driver on an up cluster pays before its first row, measured alone.

`python ray_floor.py [MODULE ...]` (RAY_ADDRESS set) prints one JSON line: seconds from the process's start to
`import ray` done, `ray.init` done, the first no-op task's result (a worker process started for this job), a second
one (a round trip on that warm worker), and one no-op task per CPU at once (every worker the job needs). With
MODULEs, each task imports them first: the floor of any Ray scorer whose workers need pyarrow and the model's
module. bench/run.py times the whole process too, so exit is counted.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

from shardscore.cli import process_age


def since_start() -> float:
    return round(process_age(), 3)


def main(imports: list[str]) -> None:
    marks = {}
    import ray

    marks["import_ray"] = since_start()
    ray.init()
    marks["ray_init"] = since_start()

    @ray.remote(num_cpus=1)
    def noop() -> int:
        for module in imports:
            importlib.import_module(module)
        return os.getpid()

    ray.get(noop.remote())
    marks["first_task"] = since_start()
    ray.get(noop.remote())
    marks["second_task"] = since_start()
    slots = int(ray.cluster_resources().get("CPU", 1))
    pids = set(ray.get([noop.remote() for _ in range(slots)]))
    marks["one_task_per_cpu"] = since_start()
    marks["workers"] = len(pids)
    print(json.dumps(marks), flush=True)
    os._exit(0)  # as shardscore's driver ends on a cluster it joined


if __name__ == "__main__":
    main(sys.argv[1:])
