"""A BBProxy router written in Python: routes each request by the longest
matching path prefix.

Configuration (the `config` of the router entry in config.json):

    {"routes": {"/api/": "api.example.com", "/static/": "cdn.example.com"},
     "default": "www.example.com"}

`routes` maps path prefixes to upstream names (keys of `domains`); the longest
prefix that starts the request's path wins. Requests no prefix matches go to
`default`, or get `404` when there is none. Unknown keys and upstream names
that are not configured are rejected by `init`, so a bad configuration never
goes live.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types

# Module state, not instance attributes: the proxy calls `init` once per
# component instance, and nothing promises that the same Python object serves
# the later calls.
ROUTES: list[tuple[str, str]] = []
DEFAULT: str | None = None


def parse(config: str, upstreams: set[str]) -> tuple[list[tuple[str, str]], str | None]:
    """Checks the configuration; returns the routes, longest prefix first."""
    try:
        cfg = json.loads(config) if config.strip() else {}
    except ValueError as e:
        raise Err(f"invalid path-router config: {e}")
    if not isinstance(cfg, dict):
        raise Err("invalid path-router config: expected a JSON object")
    unknown = sorted(set(cfg) - {"routes", "default"})
    if unknown:
        raise Err(f"invalid path-router config: unknown key {unknown[0]!r} (known: routes, default)")
    routes = cfg.get("routes", {})
    default = cfg.get("default")
    if not isinstance(routes, dict) or not all(
        isinstance(p, str) and p.startswith("/") and isinstance(u, str) for p, u in routes.items()
    ):
        raise Err('invalid path-router config: "routes" must map paths starting with "/" to upstream names')
    if default is not None and not isinstance(default, str):
        raise Err('invalid path-router config: "default" must be an upstream name')
    for name in list(routes.values()) + ([default] if default else []):
        if name not in upstreams:
            known = ", ".join(sorted(upstreams))
            raise Err(f"invalid path-router config: {name!r} is not a configured upstream (configured: {known})")
    ordered = sorted(routes.items(), key=lambda route: len(route[0]), reverse=True)
    return ordered, default


class WitWorld(wit_world.WitWorld):
    def init(self, config: str) -> None:
        global ROUTES, DEFAULT
        ROUTES, DEFAULT = parse(config, {u.name for u in host.upstreams()})
        host.log(types.Level.DEBUG, f"path router: {len(ROUTES)} route(s), default {DEFAULT}")

    def route(self, req: types.Request) -> types.Route:
        path = req.path()
        for prefix, upstream in ROUTES:
            if path.startswith(prefix):
                return types.Route_Upstream(upstream)
        if DEFAULT is not None:
            return types.Route_Upstream(DEFAULT)
        return types.Route_Respond(types.DirectResponse(404, f"no route for {path}\n"))
