"""Route by the request's ``model``: airlock names and aliases to the engine that serves them."""

from __future__ import annotations

from dataclasses import dataclass

from airlock.engines.supervisor import EngineRuntime
from airlock.gateway.apikeys import ApiKey
from airlock.gateway.errors import APIError


@dataclass(frozen=True)
class Route:
    name: str  # canonical airlock name
    runtime: EngineRuntime


class Router:
    def __init__(self, runtimes: list[EngineRuntime], aliases: dict[str, list[str]] | None = None) -> None:
        self._routes: dict[str, Route] = {}
        self._order: list[tuple[str, str]] = []  # (listed name, canonical name)
        aliases = aliases or {}
        for rt in runtimes:
            route = Route(rt.config.name, rt)
            for name in [rt.config.name, *aliases.get(rt.config.name, [])]:
                self._routes[name] = route
                self._order.append((name, rt.config.name))

    @property
    def runtimes(self) -> list[EngineRuntime]:
        seen: dict[str, EngineRuntime] = {}
        for route in self._routes.values():
            seen.setdefault(route.name, route.runtime)
        return list(seen.values())

    def names(self) -> list[tuple[str, str]]:
        """(name or alias, canonical name) in the spec's order."""
        return list(self._order)

    def resolve(self, model: str, key: ApiKey | None) -> Route:
        """The route for ``model``; 404 for a model unknown or not granted to this key (the same answer)."""
        route = self._routes.get(model)
        if route is None or (key is not None and not key.allows(route.name)):
            raise APIError(404, f"The model '{model}' does not exist or you do not have access to it.",
                           param="model", code="model_not_found")  # fmt: skip
        return route

    def listed(self, key: ApiKey | None) -> list[tuple[str, Route]]:
        """(name, route) for every name and alias whose engine is ready and that the key may use."""
        return [
            (name, self._routes[name])
            for name, canonical in self._order
            if self._routes[name].runtime.ready and (key is None or key.allows(canonical))
        ]
