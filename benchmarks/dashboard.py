"""Benchmark: the dashboard over a 100,000-trial experiment: page time and memory per request.

The experiment is made by the real driver on the simulated cluster: ``hpo-slurm simulate
benchmarks/configs/zero.yaml --objective hpo_slurm.benchmarks.zero:objective --workers 64`` with
``max_trials`` set to ``--trials`` (adaptive_asha, 256 units, rungs 1, 4, 16, 64, 256). Then:

* database: file size and row counts (trials, runs, metrics, events), the metrics table's size
  (SUM(LENGTH(metrics)), and its pages when SQLite has dbstat);
* API: ``hpo-slurm dashboard --root DIR --port 0`` in a subprocess; each endpoint the experiment page
  loads (and the trial and compare pages' two) fetched with urllib: the first request after the
  server started (cold process; the database file is in the OS page cache, as it is just written),
  then the median (min-max) of ``--repeats`` more; response bytes; the server's max RSS (VmHWM) after;
* concurrency: for each of the page's reads, a fresh server and ``--clients`` simultaneous requests of
  it (several tabs or users at once), three rounds: the server's max RSS growth and time per round;
* page: another fresh server; /e/NAME loaded ``--loads`` times in headless Chromium (selenium, a new
  navigation each, the first with an empty browser cache and a fresh server process): the time from
  navigation start (performance.timeOrigin) until ``document.body.dataset.ready`` becomes "1" (the page
  sets it once its summary, table and every chart are drawn). A MutationObserver installed before the
  page's scripts (CDP Page.addScriptToEvaluateOnNewDocument) stamps that moment with performance.now();
  selenium polls for it every 20 ms. Also recorded per load: when the HTML and the last API response
  arrived (Resource Timing), so server time and drawing time can be told apart;
* memory: each endpoint's read (hpo_slurm.dashboard.experiment_reads / trial_reads, called directly,
  plus the app's JSON encoding) in a fresh interpreter: the growth of its max RSS (VmHWM) on the first
  call, which counts SQLite's own memory (page cache, sorter), and the tracemalloc peak of a second
  call (Python objects only); beside them, what reading the whole metrics table costs
  (``Store.open_for_reading(db).metrics()``), measured the same way.

    python benchmarks/dashboard.py                   # 100,000 trials (the simulation takes about a minute)
    python benchmarks/dashboard.py --trials 2000     # a quick run; writes results/dashboard-2000.json
    python benchmarks/dashboard.py --root DIR        # reuse DIR/big from an earlier --keep run
    python benchmarks/dashboard.py --extra-validations 9   # synthetic: 10 validations per run
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import HERE, median, save, table, write_config  # noqa: E402

OBJECTIVE = "hpo_slurm.benchmarks.zero:objective"
NAME = "big"
SCREENSHOT = "/tmp/dashboard-100k.png"
PAGE_ENDPOINTS = ("version", "summary", "trials", "curves", "best", "hparams")  # what /e/NAME fetches
READY_SCRIPT = """
(() => {
  const mark = () => {
    const body = document.body;
    if (body && body.dataset.ready && window.__readyAt === undefined) {
      window.__readyAt = performance.now();
      requestAnimationFrame(() => setTimeout(() => { window.__paintedAt = performance.now(); }, 0));
    }
  };
  new MutationObserver(mark).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-ready"] });
})();
"""


def cli() -> List[str]:
    beside = Path(sys.executable).parent / "hpo-slurm"
    return [str(beside)] if beside.exists() else [shutil.which("hpo-slurm") or "hpo-slurm"]


def rss(pid: Any = "self") -> Dict[str, int]:
    """VmHWM (max RSS) and VmRSS of a process, in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            found[key] = int(value.split()[0])
    return found


# ---- 1. the experiment ----------------------------------------------------------------------------
def build(root: Path, trials: int, workers: int) -> Dict[str, Any]:
    config = write_config("zero.yaml", root.parent / "zero.yaml", max_trials=trials)
    started = time.perf_counter()
    done = subprocess.run([*cli(), "simulate", str(config), "--objective", OBJECTIVE, "--root", str(root),
                           "--name", NAME, "--workers", str(workers), "--json"],
                          capture_output=True, text=True, cwd=str(HERE.parent))
    if done.returncode != 0:
        raise RuntimeError(f"hpo-slurm simulate failed:\n{done.stderr[-3000:]}")
    seconds = time.perf_counter() - started
    try:
        report = json.loads(done.stdout)
    except ValueError:
        report = {"stdout": done.stdout[-2000:]}
    return {"simulate_s": seconds, "simulate": {k: v for k, v in report.items() if not isinstance(v, (list, dict))}}


def add_validations(database: Path, copies: int) -> None:
    """Synthetic: each validation row written ``copies`` more times, k milliseconds later (k = 1..copies),
    as if every run had validated 1 + ``copies`` times; for how the reads scale with validations."""
    conn = sqlite3.connect(str(database))
    last = conn.execute("SELECT MAX(id) FROM metrics").fetchone()[0]
    with conn:
        for k in range(1, copies + 1):
            conn.execute("INSERT INTO metrics (trial_id, run_id, kind, length, metrics, time) SELECT trial_id, "
                         "run_id, kind, length, metrics, time + ? FROM metrics WHERE id <= ? AND kind = 'validation'",
                         [k / 1000, last])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def database_stats(database: Path) -> Dict[str, Any]:
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    stats: Dict[str, Any] = {"db_bytes": database.stat().st_size}
    wal = Path(f"{database}-wal")
    stats["wal_bytes"] = wal.stat().st_size if wal.exists() else 0
    for name in ("trials", "runs", "metrics", "events"):
        stats[f"{name}_rows"] = conn.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]
    stats["metrics_by_kind"] = dict(conn.execute("SELECT kind, COUNT(*) FROM metrics GROUP BY kind"))
    stats["metrics_json_bytes"] = conn.execute("SELECT TOTAL(LENGTH(metrics)) FROM metrics").fetchone()[0]
    try:
        pages = dict(conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"))
        stats["table_bytes"] = {k: v for k, v in pages.items() if not k.startswith("sqlite_")}
    except sqlite3.Error:
        stats["table_bytes"] = None  # SQLite built without dbstat
    conn.close()
    return stats


# ---- 2. the server ----------------------------------------------------------------------------
class Server:
    """``hpo-slurm dashboard --root ROOT --port 0`` in a subprocess; its URL and token from its stdout."""

    def __init__(self, root: Path):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.errors = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen([*cli(), "dashboard", "--root", str(root), "--port", "0"],
                                        stdout=subprocess.PIPE, stderr=self.errors, text=True, env=env)
        deadline = time.time() + 60
        self.url = None
        while time.time() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            found = re.search(r"open:\s+(http://\S+)", line)
            if found:
                self.url = found.group(1)
                break
        if not self.url:
            self.stop()
            raise RuntimeError(f"the dashboard printed no URL: {self.stderr()}")
        self.base, _, self.token = self.url.partition("/?token=")
        self.rss_at_start = rss(self.process.pid)

    def stderr(self) -> str:
        self.errors.seek(0)
        return self.errors.read()[-3000:]

    def get(self, path: str) -> Tuple[float, bytes]:
        request = urllib.request.Request(self.base + path, headers={"Authorization": f"token {self.token}"})
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                body = response.read()
        except OSError as exc:
            code = self.process.poll()
            state = "running" if code is None else f"exited with {code}"
            raise RuntimeError(f"GET {path}: {exc}; the server ({state}) said:\n{self.stderr()}") from exc
        return (time.perf_counter() - started) * 1000, body

    def memory(self) -> Dict[str, int]:
        return rss(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def endpoints(best_id: int, other_id: int) -> Dict[str, str]:
    e = f"/api/e/{NAME}"
    return {
        "version": f"{e}/version",
        "summary": e,
        "trials": f"{e}/trials?sort=id&order=asc&offset=0&limit=25&q=&states=",  # the page's first table
        "trials by best": f"{e}/trials?sort=best_metric&order=asc&limit=25",
        "curves": f"{e}/curves",
        "best": f"{e}/best",
        "hparams": f"{e}/hparams",
        "experiments": "/api/experiments",
        "trial": f"{e}/trials/{best_id}",
        "compare": f"{e}/compare?ids={best_id},{other_id}",
    }


def best_ids(database: Path) -> Tuple[int, int]:
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    ids = [row[0] for row in conn.execute(
        "SELECT id FROM trials WHERE best_metric IS NOT NULL ORDER BY best_metric, id LIMIT 2")]
    conn.close()
    return ids[0], ids[1]


def time_api(server: Server, paths: Dict[str, str], repeats: int) -> List[Dict[str, Any]]:
    timed = []
    for label, path in paths.items():
        cold, body = server.get(path)
        warm = [server.get(path)[0] for _ in range(repeats)]
        timed.append({"endpoint": label, "path": path, "cold_ms": cold, "median_ms": median(warm),
                      "min_ms": min(warm), "max_ms": max(warm), "all_ms": warm, "bytes": len(body)})
        print(f"  {label:<15} cold {cold:8.1f} ms  median {median(warm):8.1f} ms ({min(warm):.1f}-{max(warm):.1f})"
              f"  {len(body):>9,} bytes", flush=True)
    return timed


def concurrent_memory(root: Path, paths: Dict[str, str], labels: List[str], clients: int) -> List[Dict[str, Any]]:
    """Per endpoint, a fresh server and ``clients`` simultaneous requests of it, three times: the server's
    max RSS growth (as when several tabs or users open the page at once)."""
    import threading

    measured = []
    for label in labels:
        server = Server(root)
        try:
            start = server.memory()["VmHWM"]
            started = time.perf_counter()
            for _ in range(3):
                threads = [threading.Thread(target=server.get, args=(paths[label],)) for _ in range(clients)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
            seconds = time.perf_counter() - started
            after = server.memory()
        finally:
            server.stop()
        measured.append({"endpoint": label, "clients": clients, "server_rss_growth_kib": after["VmHWM"] - start,
                         "server_rss_after_kib": after["VmRSS"], "ms_per_round": seconds / 3 * 1000})
        print(f"  {label:<15} {clients} at once: server max RSS +{(after['VmHWM'] - start) / 1024:6.1f} MiB "
              f"(still {after['VmRSS'] / 1024:.0f} MiB after), {seconds / 3 * 1000:.0f} ms per round", flush=True)
    return measured


# ---- 3. the page in Chromium ----------------------------------------------------------------------
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_window_size(1400, 1000)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": READY_SCRIPT})
    return driver


def load_page(driver: Any, url: str, timeout: float = 120) -> Dict[str, Any]:
    """Navigate to ``url``; milliseconds from navigation start until body.dataset.ready is "1"."""
    driver.get(url)  # returns after the load event; the page's fetches go on after it
    deadline = time.time() + timeout
    polled = None
    while time.time() < deadline:
        ready, now = driver.execute_script(
            "return [document.body ? document.body.dataset.ready || null : null, performance.now()]")
        if ready is not None:
            polled = now
            break
        time.sleep(0.02)
    if polled is None:
        error = driver.execute_script("const e = document.getElementById('error'); return e ? e.textContent : null")
        raise RuntimeError(f"{url}: not ready after {timeout} s ({error})")
    time.sleep(0.2)
    facts = driver.execute_script("""
        const nav = performance.getEntriesByType('navigation')[0];
        const api = performance.getEntriesByType('resource').filter((r) => r.name.includes('/api/'))
          .map((r) => [new URL(r.name).pathname, r.startTime, r.responseEnd]);
        return {ready: window.__readyAt === undefined ? null : window.__readyAt,
                painted: window.__paintedAt === undefined ? null : window.__paintedAt,
                value: document.body.dataset.ready, html_ms: nav ? nav.responseEnd : null,
                dom_ms: nav ? nav.domContentLoadedEventEnd : null, load_ms: nav ? nav.loadEventEnd : null, api};
    """)
    ready_ms = facts["ready"] if facts["ready"] is not None else polled
    before = [entry for entry in facts["api"] if entry[1] <= ready_ms]
    return {"ready_ms": ready_ms, "polled_ms": polled, "painted_ms": facts["painted"], "ready_value": facts["value"],
            "html_ms": facts["html_ms"], "dom_content_loaded_ms": facts["dom_ms"], "load_event_ms": facts["load_ms"],
            "last_api_response_ms": max((entry[2] for entry in before), default=None),
            "api": [{"path": p, "start_ms": s, "end_ms": e} for p, s, e in before]}


def full_page(screenshot: str) -> str:
    path = Path(screenshot)
    return str(path.with_name(f"{path.stem}-full{path.suffix}"))


def time_page(server: Server, loads: int, screenshot: str) -> List[Dict[str, Any]]:
    driver = browser()
    try:
        driver.get(f"{server.base}/?token={server.token}")  # sets the cookie, redirects to /
        results = []
        for index in range(loads):
            result = load_page(driver, f"{server.base}/e/{NAME}")
            results.append(result)
            print(f"  load {index + 1}: ready at {result['ready_ms']:.0f} ms (poll saw it at {result['polled_ms']:.0f}, "
                  f"painted {result['painted_ms'] or float('nan'):.0f}); HTML {result['html_ms']:.0f} ms, "
                  f"last API response {result['last_api_response_ms'] or float('nan'):.0f} ms", flush=True)
        driver.save_screenshot(screenshot)
        full = driver.execute_script("return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": full[0], "height": full[1], "scale": 1}})
        Path(full_page(screenshot)).write_bytes(base64.b64decode(shot["data"]))
    finally:
        driver.quit()
    return results


# ---- 4. memory, each read in a fresh interpreter --------------------------------------------------
def reads(root: Path, best_id: int, other_id: int) -> Dict[str, Callable[[], Any]]:
    """The dashboard's reads behind each endpoint, as the app calls them (the experiment looked up
    per request, the answer encoded to JSON as the app does)."""
    from hpo_slurm.core.layout import ExperimentLayout
    from hpo_slurm.dashboard import experiment_reads as er
    from hpo_slurm.dashboard import trial_reads
    from hpo_slurm.dashboard.app import _json
    from hpo_slurm.experiment import folder
    from hpo_slurm.experiment.store import Store

    layout = ExperimentLayout(root / NAME)
    from hpo_slurm.dashboard.best_so_far import BestSoFarLines

    def at() -> Any:
        return er.Experiment.at(layout)

    return {
        "summary": lambda: _json(er.detail(at())),
        "trials": lambda: _json(er.trial_rows(at(), sort="id", order="asc", offset="0", limit="25")),
        "trials by best": lambda: _json(er.trial_rows(at(), sort="best_metric", order="asc", offset="0", limit="25")),
        "curves": lambda: _json(er.curves(at())),
        "best": lambda: _json(er.best_vs_compute(at(), BestSoFarLines())),  # a new line: the whole first read
        "hparams": lambda: _json(er.hyperparameter_points(at())),
        "experiments": lambda: _json([er.overview(item) for item in folder.list_all(root)]),
        "trial": lambda: _json(trial_reads.trial_page(at(), best_id)),
        "compare": lambda: _json(trial_reads.compare(at(), [best_id, other_id])),
        "WHOLE metrics table": lambda: Store.open_for_reading(layout.database).metrics(),
    }


def measure_child(root: Path, label: str, best_id: int, other_id: int) -> Dict[str, Any]:
    """In this (fresh) interpreter: the first call's time and growth of max RSS, then the tracemalloc
    peak of a second call."""
    import gc
    import tracemalloc

    import numpy  # noqa: F401  (best_vs_compute imports it: not a cost of the read)

    read = reads(root, best_id, other_id)[label]
    gc.collect()
    before = rss()
    started = time.perf_counter()
    result = read()
    first_ms = (time.perf_counter() - started) * 1000
    after = rss()
    del result
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    started = time.perf_counter()
    read()
    traced_ms = (time.perf_counter() - started) * 1000
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"endpoint": label, "first_call_ms": first_ms, "traced_call_ms": traced_ms,
            "rss_growth_kib": after["VmHWM"] - before["VmHWM"], "rss_before_kib": before["VmHWM"],
            "tracemalloc_peak_bytes": peak, "tracemalloc_kept_bytes": current}


def measure_memory(root: Path, best_id: int, other_id: int) -> List[Dict[str, Any]]:
    measured = []
    for label in reads(root, best_id, other_id):
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child-memory", str(root), label,
                               str(best_id), str(other_id)], capture_output=True, text=True, cwd=str(HERE.parent))
        if done.returncode != 0:
            raise RuntimeError(f"memory of {label} failed:\n{done.stderr[-3000:]}")
        entry = json.loads(done.stdout.strip().splitlines()[-1])
        measured.append(entry)
        print(f"  {label:<20} tracemalloc peak {entry['tracemalloc_peak_bytes'] / 2**20:8.2f} MiB  "
              f"max RSS +{entry['rss_growth_kib'] / 1024:7.1f} MiB  ({entry['first_call_ms']:.0f} ms)", flush=True)
    return measured


def profile(root: Path, label: str, best_id: int, other_id: int) -> None:
    import cProfile
    import pstats

    read = reads(root, best_id, other_id)[label]
    read()
    profiler = cProfile.Profile()
    profiler.enable()
    read()
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


# ---- the run ------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="warm requests per endpoint after the cold one")
    parser.add_argument("--loads", type=int, default=3, help="page loads in Chromium")
    parser.add_argument("--root", type=Path, help="reuse the experiment ROOT/big instead of simulating one")
    parser.add_argument("--keep", action="store_true", help="keep the simulated experiment (its root is printed)")
    parser.add_argument("--extra-validations", type=int, default=0, metavar="K",
                        help="synthetic: copy every validation row K more times before measuring (not with --root)")
    parser.add_argument("--clients", type=int, default=4, help="simultaneous requests in the concurrency step (1: skip it)")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--screenshot", default=SCREENSHOT)
    parser.add_argument("--tag", help="results/TAG.json (default: dashboard, or dashboard-N for other sizes)")
    parser.add_argument("--profile", metavar="ENDPOINT", help="cProfile one endpoint's read (needs --root) and stop")
    parser.add_argument("--child-memory", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        root, label, best_id, other_id = args.child_memory
        print(json.dumps(measure_child(Path(root), label, int(best_id), int(other_id))))
        return

    made = None
    if args.profile and not args.root:
        parser.error("--profile needs --root (an experiment from an earlier --keep run)")
    if args.root and args.extra_validations:
        parser.error("--extra-validations changes the database: only for an experiment this run simulates")
    if args.root:
        root = args.root.resolve()
        built: Dict[str, Any] = {"simulate_s": None, "reused": str(root)}
    else:
        made = Path(tempfile.mkdtemp(prefix="hpo-dashboard-"))
        root = made / "runs"
        print(f"simulating {args.trials:,} trials, {args.workers} workers, under {root} ...", flush=True)
        built = build(root, args.trials, args.workers)
        print(f"  done in {built['simulate_s']:.0f} s", flush=True)
    database = root / NAME / "experiment.db"
    if args.extra_validations:
        add_validations(database, args.extra_validations)
        built["extra_validations"] = args.extra_validations
    best_id, other_id = best_ids(database)
    if args.profile:
        profile(root, args.profile, best_id, other_id)
        return
    stats = database_stats(database)
    print(f"experiment.db {stats['db_bytes'] / 2**20:.1f} MiB (+ WAL {stats['wal_bytes'] / 2**20:.1f} MiB): "
          f"{stats['trials_rows']:,} trials, {stats['runs_rows']:,} runs, {stats['metrics_rows']:,} metrics rows "
          f"({stats['metrics_by_kind']}), {stats['events_rows']:,} events; metrics JSON "
          f"{stats['metrics_json_bytes'] / 2**20:.1f} MiB"
          + (f", metrics table pages {stats['table_bytes'].get('metrics', 0) / 2**20:.1f} MiB"
             if stats["table_bytes"] else ""), flush=True)

    try:
        print("API (urllib, Authorization header; the first request after the server started, then "
              f"median (min-max) of {args.repeats}):", flush=True)
        server = Server(root)
        try:
            api = time_api(server, endpoints(best_id, other_id), args.repeats)
            api_server_memory = {"at_start": server.rss_at_start, "after": server.memory()}
        finally:
            server.stop()
        together: List[Dict[str, Any]] = []
        if args.clients > 1:
            print(f"{args.clients} simultaneous requests of one endpoint, a fresh server each, 3 rounds:", flush=True)
            together = concurrent_memory(root, endpoints(best_id, other_id),
                                         [label for label in PAGE_ENDPOINTS if label != "version"], args.clients)

        page: List[Dict[str, Any]] = []
        page_server_memory = None
        if not args.no_browser:
            print(f"page /e/{NAME} in headless Chromium, a fresh server, {args.loads} loads (the first cold):", flush=True)
            server = Server(root)
            try:
                page = time_page(server, args.loads, args.screenshot)
                page_server_memory = {"at_start": server.rss_at_start, "after": server.memory()}
            finally:
                server.stop()
            print(f"  screenshots: {args.screenshot} (the window), {full_page(args.screenshot)} (the whole page)")

        print("memory of each read, a fresh interpreter each (first call: max RSS growth; second call: "
              "tracemalloc peak):", flush=True)
        memory = measure_memory(root, best_id, other_id)
    finally:
        if made and not args.keep:
            shutil.rmtree(made, ignore_errors=True)
        elif made:
            print(f"kept: --root {root}")

    whole = next(m for m in memory if m["endpoint"] == "WHOLE metrics table")
    by_label = {m["endpoint"]: m for m in memory}
    rows = []
    for entry in api:
        mem = by_label.get(entry["endpoint"])
        rows.append([entry["endpoint"] + (" *" if entry["endpoint"] in PAGE_ENDPOINTS else ""),
                     entry["cold_ms"], entry["median_ms"], f"{entry['min_ms']:.1f}-{entry['max_ms']:.1f}",
                     f"{entry['bytes']:,}",
                     mem["tracemalloc_peak_bytes"] / 2**20 if mem else "-",
                     f"{mem['tracemalloc_peak_bytes'] / whole['tracemalloc_peak_bytes']:.2%}" if mem else "-",
                     mem["rss_growth_kib"] / 1024 if mem else "-"])
    rows.append(["(whole metrics table)", "-", "-", "-", "-", whole["tracemalloc_peak_bytes"] / 2**20, "100%",
                 whole["rss_growth_kib"] / 1024])
    print()
    print(f"{stats['trials_rows']:,} trials, {stats['metrics_rows']:,} metrics rows, metrics JSON "
          f"{stats['metrics_json_bytes'] / 2**20:.1f} MiB, experiment.db {stats['db_bytes'] / 2**20:.1f} MiB "
          "(* = fetched by the experiment page)")
    print(table(["endpoint", "cold ms", "median ms", "min-max ms", "bytes", "tracemalloc peak MiB",
                 "of whole table", "max RSS growth MiB"], rows))
    summary: Dict[str, Any] = {"trials": stats["trials_rows"]}
    if page:
        ready = [p["ready_ms"] for p in page]
        summary.update({"page_ready_ms_median": median(ready), "page_ready_ms_all": ready,
                        "page_ready_ms_cold": ready[0], "page_under_2s": max(ready) < 2000})
        print()
        print(table(["load", "ready ms", "painted ms", "HTML ms", "last API response ms", "drawing after it ms"],
                    [[str(i + 1) + (" (cold)" if i == 0 else ""), p["ready_ms"], p["painted_ms"] or float("nan"),
                      p["html_ms"], p["last_api_response_ms"] or float("nan"),
                      p["ready_ms"] - (p["last_api_response_ms"] or float("nan"))] for i, p in enumerate(page)]))
        print(f"page ready: median {median(ready):.0f} ms of {len(ready)} loads ({min(ready):.0f}-{max(ready):.0f}); "
              f"under 2 s: {'yes' if max(ready) < 2000 else 'NO'}")
    requests = [m for m in memory if m["endpoint"] != "WHOLE metrics table"]
    worst = max(requests, key=lambda m: m["tracemalloc_peak_bytes"])
    worst_rss = max(requests, key=lambda m: m["rss_growth_kib"])
    summary.update({"largest_request_peak_bytes": worst["tracemalloc_peak_bytes"], "largest_request": worst["endpoint"],
                    "whole_table_peak_bytes": whole["tracemalloc_peak_bytes"],
                    "largest_request_share_of_whole_table": worst["tracemalloc_peak_bytes"] / whole["tracemalloc_peak_bytes"],
                    "largest_rss_growth_kib": worst_rss["rss_growth_kib"], "largest_rss_growth_request": worst_rss["endpoint"],
                    "whole_table_rss_growth_kib": whole["rss_growth_kib"]})
    print(f"memory: the largest request peak ({worst['endpoint']}) is {worst['tracemalloc_peak_bytes'] / 2**20:.2f} MiB "
          f"= {summary['largest_request_share_of_whole_table']:.2%} of loading the whole metrics table "
          f"({whole['tracemalloc_peak_bytes'] / 2**20:.0f} MiB; the table's JSON alone is "
          f"{stats['metrics_json_bytes'] / 2**20:.1f} MiB); largest max-RSS growth {worst_rss['rss_growth_kib'] / 1024:.1f} MiB "
          f"({worst_rss['endpoint']}) against {whole['rss_growth_kib'] / 1024:.0f} MiB for the whole table")
    if together:
        heaviest = max(together, key=lambda m: m["server_rss_growth_kib"])
        summary.update({"concurrent_clients": args.clients, "concurrent_heaviest": heaviest["endpoint"],
                        "concurrent_heaviest_rss_growth_kib": heaviest["server_rss_growth_kib"]})
        print(f"{args.clients} simultaneous requests: the server's max RSS grew most for {heaviest['endpoint']}, by "
              f"{heaviest['server_rss_growth_kib'] / 1024:.0f} MiB (" + ", ".join(
                  f"{m['endpoint']} {m['server_rss_growth_kib'] / 1024:.0f}" for m in together) + " MiB)")
    for which, mem in (("API", api_server_memory), ("page", page_server_memory)):
        if mem:
            print(f"server ({which} runs): VmHWM {mem['after']['VmHWM'] / 1024:.0f} MiB after the requests, "
                  f"{mem['at_start']['VmHWM'] / 1024:.0f} MiB when it started")
    tag = args.tag or ("dashboard" if args.trials == 100_000 and not args.root else f"dashboard-{stats['trials_rows']}")
    if args.extra_validations and not args.tag:
        tag += f"-{args.extra_validations + 1}x-validations"
    path = save(tag, {"trials_asked": args.trials, "workers": args.workers, "repeats": args.repeats,
                      "build": built, "database": stats, "api": api, "page_loads": page, "memory": memory,
                      "server_memory_kib": {"api_runs": api_server_memory, "page_runs": page_server_memory},
                      "concurrent": together,
                      "summary": summary, "screenshot": args.screenshot if page else None})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
