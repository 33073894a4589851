"""The control port of every process: ``/health``, ``/metrics``, ``/admin/…``.

``/health`` and ``/metrics`` are open (bind the port to loopback or a
management network); every route under ``/admin/`` needs the bearer token of
``[admin] token``. Roles add their admin routes to ``hub.admin`` and their
health checks with ``hub.add_check``.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

from imsp2pd import __version__
from imsp2pd.metrics import CONTENT_TYPE, Registry
from imsp2pd.web import Response, Router, WebRequest

HealthCheck = Callable[[], dict[str, Any]]


def admin_router(token: str) -> Router:
    return Router(token=token, auth_prefix="/admin/")


class ControlPort:
    def __init__(
        self,
        router: Router,
        metrics: Registry,
        clock: Callable[[], float],
        roles: tuple[str, ...],
        checks: dict[str, HealthCheck] | None = None,
    ) -> None:
        self.router = router
        self.metrics = metrics
        self._clock = clock
        self._started = clock()
        self._wall_started = time.time()
        self.roles = roles
        self.roles_up: set[str] = set()
        self.checks: dict[str, HealthCheck] = checks if checks is not None else {}
        router.route("GET", "/health", self.health)
        router.route("GET", "/metrics", self.render_metrics)
        router.route("GET", "/admin/roles", self.admin_roles)
        self._register_process_metrics()

    def _register_process_metrics(self) -> None:
        m = self.metrics
        m.gauge(
            "imsp2pd_info",
            "Build information",
            ("version", "python"),
            fn=lambda: {(__version__, sys.version.split()[0]): 1.0},
        )
        m.gauge(
            "process_start_time_seconds",
            "Start time of the process (Unix time)",
            fn=lambda: self._wall_started,
        )
        m.gauge(
            "imsp2pd_uptime_seconds",
            "Seconds since the process started",
            fn=lambda: self._clock() - self._started,
        )
        m.gauge(
            "imsp2pd_role_up",
            "1 when the role's service is running",
            ("role",),
            fn=lambda: {(r,): float(r in self.roles_up) for r in self.roles},
        )
        m.gauge("process_cpu_seconds_total", "User and system CPU time", fn=_cpu_seconds)
        m.gauge("process_resident_memory_bytes", "Resident set size", fn=_rss_bytes)
        m.gauge("process_open_fds", "Open file descriptors", fn=_open_fds)

    def health(self, req: WebRequest) -> Response:
        from imsp2pd.web import json_response

        checks: dict[str, Any] = {}
        ok = all(r in self.roles_up for r in self.roles)
        for name, check in self.checks.items():
            try:
                result = check()
            except Exception as e:  # a failing check is reported, not raised
                result = {"ok": False, "error": str(e)}
            checks[name] = result
            ok = ok and bool(result.get("ok", False))
        body = {
            "status": "ok" if ok else "degraded",
            "version": __version__,
            "uptime": round(self._clock() - self._started, 3),
            "roles": {r: ("up" if r in self.roles_up else "down") for r in self.roles},
            "checks": checks,
        }
        return json_response(body, 200 if ok else 503)

    def render_metrics(self, req: WebRequest) -> Response:
        return Response(200, self.metrics.render().encode(), CONTENT_TYPE)

    def admin_roles(self, req: WebRequest) -> dict[str, Any]:
        return {
            "roles": list(self.roles),
            "up": sorted(self.roles_up),
            "routes": [f"{m} {p}" for m, p in self.router.routes()],
        }


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _rss_bytes() -> float:
    try:
        with open("/proc/self/statm") as f:
            return float(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except OSError:
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def _open_fds() -> float:
    try:
        return float(len(os.listdir("/proc/self/fd")))
    except OSError:
        return float("nan")
