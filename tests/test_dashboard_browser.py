"""The dashboard's pages in a real browser: Debian's headless Chromium, driven through chromedriver by
Selenium. The trial table, its sorting, filtering and paging, the charts' series, the trial and
comparison pages, and a page that follows a running search without being reloaded.

Needs ``chromium`` and ``chromium-driver`` (scripts/test-all.sh installs them when run as root, and
then sets HPO_SLURM_REQUIRE_BROWSER=1 so these tests cannot skip)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver")

from dashboard_helpers import REPO, TOKEN, copy_quadratic, serving, simulate  # noqa: E402
from driver_helpers import write_config  # noqa: E402
from results_helpers import launch_example  # noqa: E402

from hpo_slurm.core.layout import ExperimentLayout  # noqa: E402
from hpo_slurm.reporting import results  # noqa: E402

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not Path(CHROMEDRIVER).exists():
    if os.environ.get("HPO_SLURM_REQUIRE_BROWSER") == "1":
        raise RuntimeError("HPO_SLURM_REQUIRE_BROWSER=1 but chromedriver is not installed")
    pytest.skip("needs chromium and chromium-driver (apt-get install chromium chromium-driver)",
                allow_module_level=True)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browse")
    root, _ = launch_example(tmp, "pbt")
    simulate(root, "digits")
    return root


@pytest.fixture(scope="module")
def site(root, browser):
    with serving(root) as served:
        browser.get(f"{served.base}/?token={TOKEN}")  # the gate sets the cookie and drops the token
        assert "token" not in browser.current_url
        yield served


def wait_for(browser, script: str, timeout: float = 30.0):
    """The value of ``script`` (a JS expression) once it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = browser.execute_script(f"return {script};")
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {script}"
        time.sleep(0.1)


def open_page(browser, url: str) -> None:
    browser.get(url)
    wait_for(browser, "Number(document.body.dataset.ready || 0) >= 1")


def sort_by(browser, column: str) -> None:
    """A click on the column's header (found at the moment of the click: the header is redrawn with
    every page of the table)."""
    browser.execute_script(f"document.querySelector('th[data-sort={column}]').click();")


def series(browser, chart: str):
    """The series of a chart as ECharts holds them: [{id, type, data}, ...]."""
    return browser.execute_script(
        "return hpo.chart(arguments[0]).getOption().series.map(s => ({id: s.id, type: s.type, data: s.data}));", chart)


def table_ids(browser):
    return [int(i) for i in browser.execute_script(
        "return [...document.querySelectorAll('#trials tbody tr')].map(r => r.dataset.trial);")]


def test_the_list_shows_every_experiment(browser, site):
    open_page(browser, f"{site.base}/")
    names = browser.execute_script("return [...document.querySelectorAll('#experiments tbody tr')].map(r => r.dataset.name);")
    assert sorted(names) == ["digits", "quadratic-pbt"]


def test_the_experiment_page_table_sorts_filters_and_pages(browser, site, root):
    loaded = results.load(ExperimentLayout(root / "digits"))
    ranked = [t["id"] for t in results.ranked_trials(loaded)]
    open_page(browser, f"{site.base}/e/digits")
    assert table_ids(browser) == list(range(1, 26))
    assert "1-25 of 256 trials" in browser.find_element("id", "table-count").text
    sort_by(browser, "best_metric")
    wait_for(browser, f"document.querySelector('#trials tbody tr').dataset.trial === '{ranked[0]}'")
    assert table_ids(browser) == ranked[:25]
    browser.find_element("id", "next").click()
    wait_for(browser, f"document.querySelector('#trials tbody tr').dataset.trial === '{ranked[25]}'")
    assert table_ids(browser) == ranked[25:50]
    completed = sorted(t["id"] for t in loaded.trials if t["state"] == "COMPLETED")
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", "state-filter")).select_by_value("COMPLETED")
    wait_for(browser, f"document.getElementById('table-count').textContent.includes('{len(completed)} of 256 match')")
    assert set(table_ids(browser)) <= set(completed)
    Select(browser.find_element("id", "state-filter")).select_by_value("")
    box = browser.find_element("id", "filter")
    box.send_keys("width=16")
    wide = [t["id"] for t in loaded.trials if t["hparams"]["width"] == 16]
    wait_for(browser, f"document.getElementById('table-count').textContent.includes('{len(wide)} of 256 match')")


def test_the_experiment_page_charts_hold_the_expected_series(browser, site, root):
    loaded = results.load(ExperimentLayout(root / "digits"))
    curves = results.validation_curves(loaded)
    ranked = results.ranked_trials(loaded)
    open_page(browser, f"{site.base}/e/digits")
    drawn = {s["id"]: s["data"] for s in series(browser, "chart-curves")}
    best_200 = [t["id"] for t in ranked[:200]]
    assert sorted(drawn) == sorted(f"trial-{i}" for i in best_200)
    for trial_id in best_200[:20]:
        assert [tuple(p) for p in drawn[f"trial-{trial_id}"]] == curves[trial_id]
    (best_line,) = series(browser, "chart-best")
    values = [p[1] for p in best_line["data"]]
    assert values == sorted(values, reverse=True) and values[-1] == ranked[0]["best_metric"]
    leaves = [name for name, _ in results.searched_leaves(loaded.config.hyperparameters)]
    for index, name in enumerate(leaves):
        (scatter,) = series(browser, f"chart-hp-{index}")
        assert scatter["id"] == f"hp-{name}" and len(scatter["data"]) == 256
    (parallel,) = series(browser, "chart-parallel")
    assert len(parallel["data"]) == 256 and len(parallel["data"][0]) == len(leaves) + 1


def test_the_curves_can_follow_the_tables_page(browser, site):
    from selenium.webdriver.support.ui import Select

    open_page(browser, f"{site.base}/e/digits")
    sort_by(browser, "best_metric")
    wait_for(browser, "document.querySelector('th.sorted[data-sort=best_metric]') !== null")
    sort_by(browser, "best_metric")  # again: worst first, not the best 200
    wait_for(browser, "document.querySelector('th.sorted.desc[data-sort=best_metric]') !== null")
    Select(browser.find_element("id", "curves-of")).select_by_value("page")
    wait_for(browser, "hpo.chart('chart-curves').getOption().series.length === 25", timeout=20)
    drawn = sorted(int(s["id"].split("-")[1]) for s in series(browser, "chart-curves"))
    assert drawn == sorted(table_ids(browser))


def test_trials_ticked_on_different_pages_are_compared(browser, site):
    open_page(browser, f"{site.base}/e/digits")
    browser.execute_script("document.querySelector('tr[data-trial=\"3\"] input').click();")
    browser.find_element("id", "next").click()
    wait_for(browser, "document.querySelector('#trials tbody tr').dataset.trial === '26'")
    browser.execute_script("document.querySelector('tr[data-trial=\"30\"] input').click();")
    button = browser.find_element("id", "compare")
    assert button.is_enabled() and "(2)" in button.text
    button.click()
    wait_for(browser, "location.pathname.endsWith('/compare') && Number(document.body.dataset.ready || 0) >= 1")
    assert browser.execute_script("return new URLSearchParams(location.search).get('ids');") == "3,30"


def test_the_trial_page_shows_runs_checkpoints_metrics_and_logs(browser, site, root):
    layout = ExperimentLayout(root / "quadratic-pbt")
    loaded = results.load(layout)
    runs = [r["id"] for r in loaded.runs if r["trial_id"] == 1]
    open_page(browser, f"{site.base}/e/quadratic-pbt/trials/1")
    assert browser.execute_script("return [...document.querySelectorAll('#runs tbody tr')].map(r => r.dataset.run);") == runs
    wait_for(browser, "document.querySelector('pre.log') !== null")
    assert "Starting with JobEnvironment" in browser.find_element("css selector", "pre.log").text
    kept = sorted(p.name for p in layout.checkpoints_dir(1).iterdir() if p.name.startswith("length-"))
    assert [c.text for c in browser.find_elements("css selector", "#checkpoints tbody td.hp")] == kept
    validation = {s["id"] for s in series(browser, "chart-validation")}
    assert f"validation-{loaded.metric}" in validation


def test_compare_puts_trials_side_by_side(browser, site):
    open_page(browser, f"{site.base}/e/digits/compare?ids=4,2,7")
    headers = [h.text for h in browser.find_elements("css selector", "#compare-table thead th")][1:]
    assert headers == ["trial 4", "trial 2", "trial 7"]
    assert [s["id"] for s in series(browser, "chart-compare")] == ["trial-4", "trial-2", "trial-7"]
    differing = browser.execute_script("return [...document.querySelectorAll('#compare-table tr.diff')].map(r => r.dataset.hparam);")
    assert differing, "three random trials differ in some hyperparameter"


def test_a_page_follows_a_running_search_without_reloading(browser, tmp_path):
    """A real local search runs while its page is open: the page shows it live, then finished, in the
    same document; the driver, polled all along, is never held up (it ends normally and its database
    passes SQLite's integrity check)."""
    example = copy_quadratic(tmp_path)
    config = write_config(example / "random.yaml", example / "slow.yaml",
                          searcher={"max_trials": 6, "max_concurrent_trials": 2}, data={"sleep_per_unit": 0.03})
    root = tmp_path / "runs"
    driver = subprocess.Popen([sys.executable, "-m", "hpo_slurm.cli", "launch", str(config), "--root", str(root),
                               "--executor", "local", "--name", "live"], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (root / "live" / "experiment.db").exists():
            assert time.monotonic() < deadline and driver.poll() is None, "the search did not start"
            time.sleep(0.1)
        with serving(root) as served:
            browser.get(f"{served.base}/e/live?token={TOKEN}")
            wait_for(browser, "Number(document.body.dataset.ready || 0) >= 1")
            browser.execute_script("window.sameDocument = true;")
            wait_for(browser, "document.getElementById('live').classList.contains('on')", timeout=60)
            wait_for(browser, "[...document.querySelectorAll('#summary .state')].some(s => s.textContent === 'COMPLETED')",
                     timeout=180)
            assert browser.execute_script("return window.sameDocument === true;")
            assert int(browser.execute_script("return document.body.dataset.ready;")) >= 2
            wait_for(browser, "document.querySelectorAll('#trials tbody tr').length === 6")
            wait_for(browser, "hpo.chart('chart-curves').getOption().series.length === 6", timeout=20)  # charts: every 5 s
        assert driver.wait(timeout=120) == 0, driver.stderr.read()[-2000:]
    finally:
        if driver.poll() is None:
            driver.kill()
    import sqlite3

    with sqlite3.connect(root / "live" / "experiment.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_markup_in_a_hyperparameter_value_is_shown_as_text_never_run(browser, tmp_path):
    """A categorical value that is HTML shows as that text in the table, in a tooltip, in the trial and
    comparison pages: it never becomes an element."""
    import yaml

    markup = '<img src=x id=pwnimg onerror="document.title=1">'
    config = yaml.safe_load((REPO / "benchmarks/configs/curves.yaml").read_text())
    config["hyperparameters"]["tag"] = {"type": "categorical", "vals": [markup, "plain & <b>bold</b>"]}
    config["searcher"]["max_trials"] = 16
    (tmp_path / "markup.yaml").write_text(yaml.safe_dump(config))
    root = tmp_path / "runs"
    simulate(root, "markup", config=str(tmp_path / "markup.yaml"), objective="hpo_slurm.benchmarks.curves:high")
    with serving(root) as served:
        browser.get(f"{served.base}/e/markup?token={TOKEN}")
        wait_for(browser, "Number(document.body.dataset.ready || 0) >= 1")
        cells = browser.execute_script("return [...document.querySelectorAll('#trials td.hp')].map(c => c.textContent);")
        assert any(f"tag={markup}" in cell for cell in cells)
        index = browser.execute_script(
            "return [...document.querySelectorAll('#hparam-charts .chart')].findIndex("
            "el => hpo.chart(el.id).getOption().title[0].text === 'tag');")
        assert index >= 0
        chart = f"chart-hp-{index}"
        point = browser.execute_script("return hpo.chart(arguments[0]).getOption().series[0].data"
                                       ".findIndex(p => p[0] === arguments[1]);", chart, markup)
        assert point >= 0
        browser.execute_script("hpo.chart(arguments[0]).dispatchAction({type: 'showTip', seriesIndex: 0, "
                               "dataIndex: arguments[1]});", chart, point)
        tip = wait_for(browser, f"[...document.querySelectorAll('#{chart} div')].filter(d => d.textContent.includes('tag:'))"
                                ".map(d => d.innerHTML).pop()")
        assert "&lt;img src=x id=pwnimg" in tip and "<img" not in tip
        open_page(browser, f"{served.base}/e/markup/trials/1")
        open_page(browser, f"{served.base}/e/markup/compare?ids=1,2")
        assert browser.execute_script("return document.getElementById('pwnimg') === null && document.title !== '1';")
        assert markup in browser.find_element("id", "compare-table").text or "plain & <b>bold</b>" in \
            browser.find_element("id", "compare-table").text
