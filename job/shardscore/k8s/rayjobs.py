"""RayJobs (ray.io/v1) of one namespace: the three calls the tick makes, over the official `kubernetes` client (an
optional dependency: `pip install shardscore[kubernetes]`; the image has it)."""

from __future__ import annotations

import os
from typing import Any, Protocol

from .tickconfig import TickError


class RayJobs(Protocol):
    """The three calls the tick makes (and its Role allows): create, get, delete RayJobs in one namespace."""

    def create(self, body: dict[str, Any]) -> bool:
        """Create; False when a RayJob of that name already exists."""

    def get(self, name: str) -> dict[str, Any] | None:
        """The RayJob, or None when there is none."""

    def delete(self, name: str) -> None:
        """Delete (no error when it is already gone)."""


class KubeRayJobs:
    """RayJobs (ray.io/v1) of one namespace through the official `kubernetes` client."""

    def __init__(self, namespace: str):
        try:
            from kubernetes import client, config
        except ImportError as exc:
            raise TickError("the `kubernetes` package is missing: pip install 'shardscore[kubernetes]'") from exc
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # outside a pod, trying it by hand
        self._api = client.CustomObjectsApi()
        self._error = client.ApiException
        self._namespace = namespace
        self._where = {"group": "ray.io", "version": "v1", "namespace": namespace, "plural": "rayjobs"}

    def create(self, body: dict[str, Any]) -> bool:
        try:
            # Strict: an unknown field fails the create instead of being dropped by the API server.
            self._api.create_namespaced_custom_object(body=body, field_validation="Strict", **self._where)
            return True
        except self._error as exc:
            if exc.status == 409:
                return False
            raise

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return self._api.get_namespaced_custom_object(name=name, **self._where)
        except self._error as exc:
            if exc.status == 404:
                return None
            raise

    def delete(self, name: str) -> None:
        try:
            self._api.delete_namespaced_custom_object(name=name, **self._where)
        except self._error as exc:
            if exc.status != 404:
                raise
