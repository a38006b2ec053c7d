"""What shardscore does on Kubernetes, beside the run itself: the Helm chart's CronJob tick (`tick`, run as
`shardscore tick`) and the Ray pods' preStop hook (`podstop`, run as `python -m shardscore.k8s.podstop`). The
run's own visibility on Kubernetes (its progress on the RayJob, Events) belongs here too.

The scoring core never imports this package: a run knows nothing of Kubernetes. Only cli.py does, for the `tick`
subcommand.
"""
