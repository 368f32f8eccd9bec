"""The ASGI app of a :class:`~enfold.runtime.repository.ModelRepository`: each model keeps its
own complete app (``create_app``: its batchers, limits, deadline and cancellation), and this app
sends every request to the right one.

    GET  /v1/models                         the models: name, file, backend, targets, endpoints
    *    /v1/models/{name}/{endpoint}       that model's /v1/{endpoint} (classify, restore, ...)
    GET  /v1/models/{name}                  that model's /v1/metadata
    GET  /v2/models                         every Open Inference Protocol model of every model
    POST /v2/repository/index               the same, as the protocol's repository index
    *    /v2/models/{oip name}/...          the model that serves it
    GET  /healthz, /v2, /v2/health/...      answered by the first model's app

With one model, every other path goes to its app, so the single-model routes (``/v1/classify``,
``/v1/metadata``, the protocol's models named as before) keep working. With several, a
single-model route is a 404 that lists the models and the route to use.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

from enfold.runtime.repository import ModelRepository

V1_MODEL = re.compile(r"/v1/models/([^/]+)(/.*)?")
V2_MODEL = re.compile(r"/v2/models/([^/]+)(/.*)?")
SHARED = ("/healthz", "/v2", "/v2/health/live", "/v2/health/ready")


class RepositoryApp:
    """Dispatches to ``apps`` (name -> the model's app, ``enfold.runtime.server.create_app``;
    its ``state`` holds ``endpoints`` and ``oip_models``); ``oip_names`` maps each Open
    Inference Protocol model name to the name of the model that serves it. Built by
    ``enfold.runtime.server.create_repository_app``."""

    def __init__(self, repo: ModelRepository, apps: dict[str, Any],
                 oip_names: dict[str, str]) -> None:
        self.repo = repo
        self.apps = apps
        self.oip_names = oip_names
        self.single = apps[repo.names[0]] if len(repo) == 1 else None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        first = self.apps[self.repo.names[0]]
        if match := V1_MODEL.fullmatch(path):
            name, rest = match.group(1), match.group(2) or ""
            if name not in self.apps:
                await _json(send, 404, {"detail": f"no model {name!r}; this server has "
                                                  f"{', '.join(self.repo.names)}"})
                return
            target = "/v1/metadata" if rest in ("", "/") else "/v1" + rest
            await self.apps[name](_moved(scope, target), receive, send)
        elif path == "/v1/models" and method == "GET":
            await _json(send, 200, {"models": [self._describe(m.name) for m in self.repo]})
        elif path == "/v2/models" and method == "GET":
            await _json(send, 200, {"models": await self._oip_models()})
        elif path == "/v2/repository/index" and method == "POST":
            await _json(send, 200, [{"name": name, "version": "1", "state": "READY"}
                                    for name in sorted(self.oip_names)])
        elif (match := V2_MODEL.fullmatch(path)) and match.group(1) in self.oip_names:
            await self.apps[self.oip_names[match.group(1)]](scope, receive, send)
        elif self.single is not None:
            await self.single(scope, receive, send)
        elif path in SHARED:
            await first(scope, receive, send)
        elif path.startswith("/v2/"):
            name = match.group(1) if match else path
            await _json(send, 404, {"error": f"unknown model or endpoint {name!r}; this server "
                                             f"has {', '.join(sorted(self.oip_names))}"})
        else:
            endpoint = path.rsplit("/", 1)[-1] or "ENDPOINT"
            await _json(send, 404, {"detail": f"this server serves several models "
                                              f"({', '.join(self.repo.names)}): use "
                                              f"/v1/models/NAME/{endpoint}"})

    def _describe(self, name: str) -> dict[str, Any]:
        model = self.repo[name]
        return {"name": name, "file": model.path.name, "backend": model.session.describe(),
                "targets": model.session.targets,
                "endpoints": [f"/v1/models/{name}/{e}" for e in self.apps[name].state.endpoints],
                "oip_models": sorted(o for o, owner in self.oip_names.items() if owner == name)}

    async def _oip_models(self) -> list[dict[str, Any]]:
        models = [oip.metadata() for app in self.apps.values()
                  for oip in app.state.oip_models.values()]
        return sorted(models, key=lambda m: m["name"])

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        # every model's app has its own lifespan (its batchers stop at shutdown)
        stack = AsyncExitStack()
        await receive()  # lifespan.startup
        for app in self.apps.values():
            await stack.enter_async_context(app.router.lifespan_context(app))
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await stack.aclose()
        await send({"type": "lifespan.shutdown.complete"})


def _moved(scope: dict, path: str) -> dict:
    return {**scope, "path": path, "raw_path": path.encode()}


async def _json(send: Callable, status: int, content: Any) -> None:
    body = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
