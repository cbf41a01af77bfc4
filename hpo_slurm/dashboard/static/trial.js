// One trial: its summary, hyperparameters, every metric it reported, its runs, checkpoints and the
// tail of each run's logs; refreshed while the experiment's database changes.
"use strict";
(() => {
  const { el, api, num, state, when, duration, apiUrl, expUrl } = hpo;
  const name = hpo.experimentName();
  const trialId = Number(location.pathname.split("/")[4]);
  let chosenRun = null;

  document.title = `trial ${trialId} · ${name} · hpo-slurm`;
  document.getElementById("crumbs").append(" / ", el("a", { href: expUrl(name), text: name }), ` / trial ${trialId}`);

  function card(label, value, sub) {
    return el("div", { class: "card" }, el("div", { class: "label", text: label }), el("div", { class: "value" }, value), sub ? el("div", { class: "sub" }, sub) : null);
  }

  function bytes(n) {
    if (n < 1024) return `${n} B`;
    const units = ["KiB", "MiB", "GiB", "TiB"];
    let value = n, unit = -1;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return `${value.toFixed(1)} ${units[unit]}`;
  }

  function metricSeries(lines, kind) {
    const series = {};
    for (const line of lines.filter((l) => l.kind === kind)) {
      for (const [key, value] of Object.entries(line.metrics)) {
        if (typeof value !== "number") continue;
        (series[key] = series[key] || []).push([line.length, value]);
      }
    }
    return series;
  }

  function drawMetrics(id, lines, kind, metric, reported) {
    const series = metricSeries(lines, kind);
    const keys = Object.keys(series).sort((a, b) => (b === metric) - (a === metric) || a.localeCompare(b));
    const shown = lines.filter((l) => l.kind === kind).length;
    hpo.chart(id).setOption({
      animation: false, title: { text: `${kind} metrics${shown < reported ? ` (the last ${shown} of ${reported} reports)` : ""}`, textStyle: { fontSize: 13 } }, grid: { left: 60, right: 60, top: 50, bottom: 40 },
      legend: { top: 22, type: "scroll" }, tooltip: { trigger: "axis" },
      xAxis: { type: "value", name: "length", nameLocation: "middle", nameGap: 24 },
      yAxis: [{ type: "value", scale: true, name: keys[0] || "" }, { type: "value", scale: true }],
      series: keys.map((key, i) => ({ type: "line", name: key, id: `${kind}-${key}`, data: series[key], yAxisIndex: i === 0 ? 0 : 1, showSymbol: series[key].length < 60, lineStyle: { width: key === metric ? 2.5 : 1.2 } })),
    }, { notMerge: true });
  }

  function runRow(r) {
    return el("tr", { "data-run": r.id }, el("td", { text: r.id }), el("td", {}, state(r.state)), el("td", { text: `${r.from_length} → ${r.to_length || "open-ended"}` }),
      el("td", { text: r.job_id || "-" }), el("td", { text: when(r.submitted_at) }), el("td", { text: when(r.started_at) }),
      el("td", { text: r.started_at ? duration(r.started_at, r.ended_at) : "-" }), el("td", { text: r.exit_code === null ? "-" : String(r.exit_code) }),
      el("td", { text: r.reason || "" }));
  }

  async function loadLogs() {
    if (!chosenRun) { document.getElementById("logs").replaceChildren(el("p", { class: "note", text: "No runs yet." })); return; }
    const data = await api(apiUrl(name, `/trials/${trialId}/logs?run=${encodeURIComponent(chosenRun)}`));
    document.getElementById("logs").replaceChildren(...(data.files.length ? data.files.map((f) => el("div", {},
      el("p", { class: "note", text: f.error ? `${f.name}: cannot be read (${f.error})` : `${f.name} (${bytes(f.bytes)}${f.truncated ? ", the last 64 KiB" : ""})` }),
      f.error ? null : el("pre", { class: "log", "data-file": f.name, text: f.text || "(empty)" }))) : [el("p", { class: "note", text: `No log files for ${chosenRun} yet.` })]));
    document.getElementById("log-note").textContent = `the tail of each log file of ${chosenRun}, as of the last change to the search`;
  }

  async function refresh() {
    const data = await api(apiUrl(name, `/trials/${trialId}`));
    const t = data.trial;
    document.getElementById("summary").replaceChildren(
      card("state", state(t.state), t.message || (t.ended_at ? `ended ${when(t.ended_at)}` : `created ${when(t.created_at)}`)),
      card(`best ${data.metric}`, num(t.best_metric), t.best_length ? `at ${t.best_length} ${data.unit}` : ""),
      card("latest", num(t.latest_metric), `validated to ${t.validated_length}${t.target_length ? ` of ${t.target_length}` : ""} ${data.unit}`),
      card("restarts", String(t.restarts), `${t.preemptions} preempted, ${t.time_limits} at the time limit`),
      t.parent !== null ? card("parent", el("a", { href: `${expUrl(name)}/trials/${t.parent}`, text: `trial ${t.parent}` }), data.parent_checkpoint || "") : null);
    document.querySelector("#hparams tbody").replaceChildren(...hpo.flatten(t.hparams).map(([k, v]) =>
      el("tr", {}, el("td", { class: "hp", text: k }), el("td", { class: "hp", text: typeof v === "string" ? v : JSON.stringify(v) }))));
    drawMetrics("chart-validation", data.metrics, "validation", data.metric, data.metric_counts.validation);
    drawMetrics("chart-training", data.metrics, "training", data.metric, data.metric_counts.training);
    document.querySelector("#runs tbody").replaceChildren(...data.runs.map(runRow));
    document.querySelector("#checkpoints tbody").replaceChildren(...(data.checkpoints.length ? data.checkpoints.map((c) =>
      el("tr", {}, el("td", { class: "hp", text: c.name }), el("td", { text: c.length === null ? "-" : String(c.length) }), el("td", { text: bytes(c.bytes) }),
        el("td", { text: c.published ? "yes" : "being written" }), el("td", { text: when(c.modified) }))) : [el("tr", {}, el("td", { colspan: 5, class: "muted", text: "none kept" }))]));
    const select = document.getElementById("log-run");
    const ids = data.runs.map((r) => r.id);
    if (!chosenRun || !ids.includes(chosenRun)) chosenRun = ids[ids.length - 1] || null;
    select.replaceChildren(...ids.map((id) => el("option", { value: id, text: id, selected: id === chosenRun })));
    select.onchange = () => { chosenRun = select.value; loadLogs().catch((e) => hpo.showError("logs", e)); };
    await loadLogs();
    hpo.markReady();
  }

  hpo.watch(name, () => refresh().catch((error) => hpo.showError("trial", error)));
})();
