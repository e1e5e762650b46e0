"""``airlock deploy``: the spec as containers (compose here, Kubernetes beside it), from one model.

``model.py`` builds a :class:`~airlock.deploy.model.Deployment` (engines as services, the gateway,
every image found in the store); ``compose.py`` renders and runs it with docker-compose.
"""

from airlock.deploy.model import (
    Deployment,
    DeployOptions,
    EngineService,
    GatewayService,
    Mount,
    build_deployment,
)

__all__ = [
    "DeployOptions",
    "Deployment",
    "EngineService",
    "GatewayService",
    "Mount",
    "build_deployment",
]
