"""The dashboard's web application (Starlette): read-only JSON endpoints over the experiments under one
root, the pages that draw them, and the assets they need, all served from the package.

Every request passes the token gate (gate.py). Only GET and HEAD are routed: no endpoint writes.
An experiment is named in the URL by its folder name, checked with the rule experiment names follow
and looked up as a direct child of the root; trials are ids, runs must belong to their trial
(trial_reads.py), so no request reaches a file outside the experiment folders.

    /                                   the experiment list
    /e/NAME                             one experiment, live
    /e/NAME/trials/ID                   one trial
    /e/NAME/compare?ids=1,2             trials side by side
    /api/experiments                    [overview, ...]
    /api/e/NAME                         summary (status's, plus what the charts need)
    /api/e/NAME/version                 changes whenever the database does (the pages poll it)
    /api/e/NAME/trials?sort=&order=&states=&q=&offset=&limit=
    /api/e/NAME/curves[?ids=]  /best  /hparams
    /api/e/NAME/trials/ID  /api/e/NAME/trials/ID/logs?run=RUN  /api/e/NAME/compare?ids=
"""

from __future__ import annotations

import json
import math
import string
from pathlib import Path
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from hpo_slurm.config.schema import check_name
from hpo_slurm.core.errors import UserError
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.dashboard import experiment_reads as reads
from hpo_slurm.dashboard import trial_reads
from hpo_slurm.dashboard.best_so_far import BestSoFarLines
from hpo_slurm.dashboard.experiment_reads import BadRequest, Experiment
from hpo_slurm.dashboard.gate import TokenGate
from hpo_slurm.dashboard.trial_reads import NotFound
from hpo_slurm.experiment import folder
from hpo_slurm.experiment.lock import driver_alive

STATIC = Path(__file__).parent / "static"
PAGES = Path(__file__).parent / "pages"  # shell.html, and the body of each page (its script: static/<page>.js)
PAGE_SCRIPTS = {"list": "list.js", "experiment": "experiment.js", "trial": "trial.js", "compare": "compare.js"}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token never leaves in a Referer
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}


def plain(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None: JSON has no NaN or infinity."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def _json(value: Any, status: int = 200) -> Response:
    body = json.dumps(plain(value), separators=(",", ":"), default=str)
    return Response(body, status_code=status, media_type="application/json",
                    headers={"Cache-Control": "no-store", **SECURITY_HEADERS})


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


class Dashboard:
    """The endpoints over the experiments under ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        shell = string.Template((PAGES / "shell.html").read_text(encoding="utf-8"))
        self.pages = {which: shell.substitute(script=script, body=(PAGES / f"{which}.html").read_text(encoding="utf-8"))
                      for which, script in PAGE_SCRIPTS.items()}
        self.lines = BestSoFarLines()  # best-so-far steps kept between requests, brought up to date each

    def experiment(self, request: Request) -> Experiment:
        """The experiment the URL names; NotFound unless it is a direct child of the root holding an
        experiment database."""
        name = request.path_params["name"]
        try:
            layout = folder.find(self.root, name)
        except UserError:
            raise NotFound(f"no experiment named {name[:100]!r}") from None
        if not self._servable(layout):
            raise NotFound(f"no experiment named {name[:100]!r}")
        return Experiment.at(layout)

    @staticmethod
    def trial_id(request: Request) -> int:
        """The URL's trial id; NotFound past any id SQLite can hold."""
        trial_id = request.path_params["trial_id"]
        if trial_id >= 2**63:
            raise NotFound(f"no trial {trial_id}")
        return trial_id

    # ---- pages and the endpoints' plumbing ----------------------------------------------------
    def page(self, which: str) -> Callable[[Request], Response]:
        def serve(request: Request) -> Response:
            if "name" in request.path_params:
                self.experiment(request)  # a page of an experiment that is not there is a 404
            if "trial_id" in request.path_params:
                self.trial_id(request)
            return HTMLResponse(self.pages[which], headers={"Cache-Control": "no-store", **SECURITY_HEADERS})
        return self._guarded(serve)

    def _guarded(self, endpoint: Callable[[Request], Response]) -> Callable[[Request], Response]:
        """Turns the readers' errors into their HTTP answers: 404, 400, and 500 with the message for an
        experiment whose files cannot be read (anything else is a bug: Starlette logs it and answers 500)."""
        def run(request: Request) -> Response:
            try:
                return endpoint(request)
            except NotFound as exc:
                return _error(404, str(exc))
            except BadRequest as exc:
                return _error(400, str(exc))
            except UserError as exc:
                return _error(500, str(exc))
        return run

    def api(self, read: Callable[[Request], Any]) -> Callable[[Request], Response]:
        return self._guarded(lambda request: _json(read(request)))

    # ---- the reads ----------------------------------------------------------------------------
    def experiments(self, request: Request) -> Any:
        return [reads.overview(layout) for layout in folder.list_all(self.root) if self._servable(layout)]

    def _servable(self, layout: ExperimentLayout) -> bool:
        """A folder the routes serve: a safe name, directly under the root once links are resolved."""
        try:
            check_name(layout.name, "experiment name", "")
        except UserError:
            return False
        return layout.dir.resolve().parent == self.root.resolve()

    def summary(self, request: Request) -> Any:
        return reads.detail(self.experiment(request))

    def version(self, request: Request) -> Any:
        """What changes whenever the driver commits (the sizes and times of the database and its
        write-ahead log), and whether the driver is alive: the pages poll this and refetch on change.
        The driver's heartbeat (the lock file, rewritten every tick) is left out of the stamp."""
        layout = self.experiment(request).layout
        marks = []
        for path in (layout.database, Path(f"{layout.database}-wal")):  # not the lock: its heartbeat ticks
            try:
                stat = path.stat()
                marks.append(f"{stat.st_mtime_ns}.{stat.st_size}")
            except OSError:
                marks.append("-")
        return {"version": ":".join(marks), "driver": driver_alive(layout.lock)}

    def trials(self, request: Request) -> Any:
        q = request.query_params
        return reads.trial_rows(self.experiment(request), sort=q.get("sort", "id"), order=q.get("order", "asc"),
                                states=q.get("states", ""), text=q.get("q", ""), offset=q.get("offset", "0"),
                                limit=q.get("limit", "50"))

    def curves(self, request: Request) -> Any:
        ids = reads.parse_ids(request.query_params.get("ids", ""), most=max(reads.PAGE_SIZES))  # a table page's
        return reads.curves(self.experiment(request), ids)

    def best(self, request: Request) -> Any:
        return reads.best_vs_compute(self.experiment(request), self.lines)

    def hparams(self, request: Request) -> Any:
        return reads.hyperparameter_points(self.experiment(request))

    def trial(self, request: Request) -> Any:
        return trial_reads.trial_page(self.experiment(request), self.trial_id(request))

    def logs(self, request: Request) -> Any:
        return trial_reads.trial_logs(self.experiment(request), self.trial_id(request),
                                      request.query_params.get("run", ""))

    def compare(self, request: Request) -> Any:
        ids = reads.parse_ids(request.query_params.get("ids", ""), most=trial_reads.COMPARED[1])
        return trial_reads.compare(self.experiment(request), ids)

    def routes(self) -> list:
        get = ["GET"]
        e = "/api/e/{name}"
        return [
            Route("/", self.page("list"), methods=get),
            Route("/e/{name}", self.page("experiment"), methods=get),
            Route("/e/{name}/trials/{trial_id:int}", self.page("trial"), methods=get),
            Route("/e/{name}/compare", self.page("compare"), methods=get),
            Route("/api/experiments", self.api(self.experiments), methods=get),
            Route(e, self.api(self.summary), methods=get),
            Route(f"{e}/version", self.api(self.version), methods=get),
            Route(f"{e}/trials", self.api(self.trials), methods=get),
            Route(f"{e}/curves", self.api(self.curves), methods=get),
            Route(f"{e}/best", self.api(self.best), methods=get),
            Route(f"{e}/hparams", self.api(self.hparams), methods=get),
            Route(f"{e}/trials/{{trial_id:int}}", self.api(self.trial), methods=get),
            Route(f"{e}/trials/{{trial_id:int}}/logs", self.api(self.logs), methods=get),
            Route(f"{e}/compare", self.api(self.compare), methods=get),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]


def create_app(root: Path, token: str, cookie: str) -> TokenGate:
    """The dashboard over ``root``, behind a gate that wants ``token`` (kept in the cookie ``cookie``)."""
    app = Starlette(routes=Dashboard(root).routes())
    return TokenGate(app, token, cookie, extra_headers=SECURITY_HEADERS)
