// One experiment, live: summary, the trial table (sorted, filtered and paged by the server), learning
// curves with the rungs, best so far against compute, each hyperparameter against the metric, and
// parallel coordinates. Everything is refetched when the experiment's database changes.
"use strict";
(() => {
  const { el, api, num, hours, state, when, hpText, apiUrl, expUrl, esc } = hpo;
  const name = hpo.experimentName();
  const SORTABLE = { id: "id", state: "state", best: "best_metric", latest: "latest_metric", length: "validated_length", restarts: "restarts", preemptions: "preemptions" };
  const table = { sort: "id", order: "asc", offset: 0, limit: 25, text: "", state: "", selected: new Set(), shown: [] };
  let summary = null;

  document.title = `${name} · hpo-slurm`;
  document.getElementById("crumbs").append(" / ", el("a", { href: expUrl(name), text: name }));

  // ---- summary ------------------------------------------------------------------------------
  function card(label, value, sub) {
    return el("div", { class: "card" }, el("div", { class: "label", text: label }), el("div", { class: "value" }, value), sub ? el("div", { class: "sub" }, sub) : null);
  }

  function renderSummary(s) {
    const trials = Object.values(s.trial_counts).reduce((a, b) => a + b, 0);
    const counts = Object.entries(s.trial_counts).filter(([, n]) => n).map(([k, n]) => `${n} ${k.toLowerCase()}`).join(", ");
    const runs = Object.entries(s.run_counts).filter(([, n]) => n).map(([k, n]) => `${n} ${k.toLowerCase()}`).join(", ");
    const best = s.best ? el("a", { href: `${expUrl(name)}/trials/${s.best.trial_id}`, text: `${num(s.best.metric)}` }) : "-";
    const bestSub = s.best ? `trial ${s.best.trial_id} at ${s.best.length} ${s.unit}; ${hpText(s.best.hparams)}` : `${s.metric}, ${s.smaller_is_better ? "smaller" : "larger"} is better`;
    const progress = el("span", {}, `${Math.round(s.progress * 100)}%`, el("div", { class: "progress" }, el("div", { style: `width:${Math.round(s.progress * 100)}%` })));
    document.getElementById("summary").replaceChildren(
      card("state", state(s.state), s.ended_at ? `ended ${when(s.ended_at)}` : `since ${when(s.created_at)}`),
      card("searcher", s.sampler && s.sampler !== "random" ? `${s.searcher} (${s.sampler})` : s.searcher, `${s.executor} executor`),
      card("progress", progress, s.driver.alive ? `driver pid ${s.driver.pid} on ${s.driver.host}` : "driver not running"),
      card("trials", String(trials), counts),
      card(`best ${s.metric}`, best, bestSub),
      card(s.slots_per_trial ? "GPU-hours" : "compute hours (no GPUs)", hours(s.slots_per_trial ? s.gpu_hours : s.job_hours), runs));
  }

  // ---- trial table --------------------------------------------------------------------------
  function header() {
    const cells = [el("th", {}, "")];
    for (const [label, column] of Object.entries(SORTABLE)) {
      const sorted = table.sort === column;
      cells.push(el("th", { class: `sortable${sorted ? " sorted" : ""}${sorted && table.order === "desc" ? " desc" : ""}`, "data-sort": column,
        onclick: () => { table.order = sorted && table.order === "asc" ? "desc" : "asc"; table.sort = column; table.offset = 0; loadTable(); } },
        label === "best" || label === "latest" ? `${label} ${summary ? summary.metric : ""}` : label));
    }
    cells.push(el("th", {}, "hyperparameters"));
    document.querySelector("#trials thead").replaceChildren(el("tr", {}, ...cells));
  }

  function trialRow(t, bestId) {
    const box = el("input", { type: "checkbox", "aria-label": `select trial ${t.id}`, onchange: (ev) => { ev.target.checked ? table.selected.add(t.id) : table.selected.delete(t.id); compareButton(); } });
    box.checked = table.selected.has(t.id);
    const target = t.target_length ? `/${t.target_length}` : "";
    return el("tr", { "data-trial": t.id, class: t.id === bestId ? "best" : null },
      el("td", {}, box),
      el("td", {}, el("a", { href: `${expUrl(name)}/trials/${t.id}`, text: String(t.id) })),
      el("td", { title: t.message || "" }, state(t.state)),
      el("td", { class: "num", text: num(t.best_metric) }),
      el("td", { class: "num", text: num(t.latest_metric) }),
      el("td", { class: "num", text: `${t.validated_length}${target}` }),
      el("td", { class: "num", text: String(t.restarts) }),
      el("td", { class: "num", text: String(t.preemptions) }),
      el("td", { class: "hp", text: hpText(t.hparams) }));
  }

  function compareButton() {
    const button = document.getElementById("compare");
    button.disabled = table.selected.size < 2 || table.selected.size > 5;
    button.textContent = `compare selected (${table.selected.size})`;
  }

  const fetchPage = hpo.latest((query) => api(apiUrl(name, `/trials?${query}`)));

  async function loadTable() {
    const q = new URLSearchParams({ sort: table.sort, order: table.order, offset: table.offset, limit: table.limit, q: table.text, states: table.state });
    const page = await fetchPage(q);
    if (!page) return;  // a newer request (a click, a poll) answers instead
    if (page.offset > 0 && page.offset >= page.matched) {  // fewer matches than before (trials finished): the last page
      table.offset = Math.max(0, Math.floor((page.matched - 1) / table.limit) * table.limit);
      return loadTable();
    }
    header();
    const before = table.shown.join(",");
    table.shown = page.rows.map((t) => t.id);
    if (document.getElementById("curves-of").value === "page" && before !== table.shown.join(",")) redrawCurves();
    const bestId = summary && summary.best ? summary.best.trial_id : null;
    document.querySelector("#trials tbody").replaceChildren(...page.rows.map((t) => trialRow(t, bestId)));
    const last = Math.min(page.offset + page.rows.length, page.matched);
    const filtered = page.matched !== page.total ? ` (${page.matched} of ${page.total} match)` : "";
    document.getElementById("table-count").textContent = page.matched ? `${page.offset + 1}-${last} of ${page.matched} trials${filtered}` : `no trials${filtered}`;
    document.getElementById("prev").disabled = table.offset === 0;
    document.getElementById("next").disabled = last >= page.matched;
  }

  function setupTable() {
    const states = document.getElementById("state-filter");
    hpo.STATES.forEach((s) => states.append(el("option", { value: s, text: s.toLowerCase() })));
    states.onchange = () => { table.state = states.value; table.offset = 0; loadTable(); };
    let timer = null;
    document.getElementById("filter").oninput = (ev) => {
      clearTimeout(timer);
      timer = setTimeout(() => { table.text = ev.target.value; table.offset = 0; loadTable(); }, 250);
    };
    document.getElementById("page-size").onchange = (ev) => { table.limit = Number(ev.target.value); table.offset = 0; loadTable(); };
    document.getElementById("prev").onclick = () => { table.offset = Math.max(0, table.offset - table.limit); loadTable(); };
    document.getElementById("next").onclick = () => { table.offset += table.limit; loadTable(); };
    document.getElementById("curves-of").onchange = redrawCurves;
    document.getElementById("compare").onclick = () => { location.href = `${expUrl(name)}/compare?ids=${[...table.selected].join(",")}`; };
    compareButton();
  }

  // ---- charts -------------------------------------------------------------------------------
  function drawCurves(data) {
    const lengthsReached = {};
    for (const [id, points] of Object.entries(data.curves)) lengthsReached[id] = points[points.length - 1][0];
    const colours = hpo.lengthColours(Object.values(lengthsReached));
    const xs = Object.values(data.curves).flat().map((p) => p[0]);
    const ys = Object.values(data.curves).flat().map((p) => p[1]);
    const rungs = summary ? summary.rungs : [];
    const series = Object.entries(data.curves).map(([id, points]) => {
      const best = Number(id) === data.best;
      return { type: "line", name: `trial ${id}`, id: `trial-${id}`, data: points, showSymbol: points.length < 40, symbolSize: 4,
               lineStyle: { width: best ? 3.5 : 1.2, color: best ? "#d92d20" : colours[lengthsReached[id]] },
               itemStyle: { color: best ? "#d92d20" : colours[lengthsReached[id]] }, z: best ? 10 : 2, emphasis: { focus: "series" } };
    });
    for (const [child, [parent, start]] of Object.entries(data.parents)) {
      const from = (data.curves[parent] || []).find((p) => p[0] === start);
      const to = (data.curves[child] || [])[0];
      if (from && to) series.push({ type: "line", name: `trial ${child} from trial ${parent}`, id: `parent-${child}`, data: [from, to], showSymbol: false, lineStyle: { type: "dotted", width: 1, color: "#98a2b3" }, silent: true });
    }
    if (series.length && rungs.length > 1) series[0].markLine = { silent: true, symbol: "none", lineStyle: { color: "#98a2b3", type: "dashed" }, label: { formatter: "{c}" }, data: rungs.map((n) => ({ xAxis: n })) };
    const logX = hpo.logWorthy(xs, 8), logY = hpo.logWorthy(ys, 30);
    hpo.chart("chart-curves").setOption({
      animation: false, grid: { left: 70, right: 30, top: 30, bottom: 50 },
      tooltip: { trigger: "item", formatter: (p) => `${esc(p.seriesName)}<br>${esc(summary ? summary.unit : "length")} ${esc(p.value[0])}: ${esc(num(p.value[1]))}` },
      xAxis: { type: logX ? "log" : "value", logBase: 2, name: `length (${summary ? summary.unit : ""})`, nameLocation: "middle", nameGap: 28, min: logX ? undefined : 0 },
      yAxis: { type: logY ? "log" : "value", name: data.metric, scale: true },
      dataZoom: [{ type: "inside", xAxisIndex: 0 }, { type: "inside", yAxisIndex: 0 }],
      series,
    }, { notMerge: true });
    const shown = Object.keys(data.curves).length;
    const ofPage = document.getElementById("curves-of").value === "page";
    document.getElementById("curves-note").textContent = ofPage ? `${shown} trials of the table's page with a ${data.metric}; red: the best of the search.` : shown < data.scored
      ? `The ${shown} best of ${data.scored} trials with a ${data.metric}; red: the best; colour: the length a trial reached; dashed: rungs.`
      : `${shown} trials; red: the best; colour: the length a trial reached${rungs.length > 1 ? `; dashed: the lengths trials stopped at (${rungs.join(", ")})` : ""}.`;
  }

  function drawBest(data) {
    const points = data.points.map((p) => [p[0], p[1], p[2]]);
    if (points.length) points.push([Math.max(data.total_hours, points[points.length - 1][0]), points[points.length - 1][1], points[points.length - 1][2]]);
    hpo.chart("chart-best").setOption({
      animation: false, grid: { left: 70, right: 30, top: 30, bottom: 50 },
      tooltip: { trigger: "item", formatter: (p) => `trial ${esc(p.value[2])}: ${esc(num(p.value[1]))}<br>at ${esc(hours(p.value[0]))} ${esc(data.compute_label)}` },
      xAxis: { type: "value", name: data.compute_label, nameLocation: "middle", nameGap: 28 },
      yAxis: { type: "value", name: `best ${data.metric}`, scale: true },
      series: [{ type: "line", id: "best", name: `best ${data.metric}`, step: "end", data: points, symbolSize: 5, lineStyle: { width: 2 } }],
    }, { notMerge: true });
  }

  function axisFor(param) {
    if (param.kind === "categorical") return { type: "category", data: param.vals, name: param.name };
    if (param.kind === "log") return { type: "log", name: param.name, min: param.minval, max: param.maxval };
    return { type: "value", name: param.name, min: param.minval, max: param.maxval };
  }

  function drawHparams(data) {
    const holder = document.getElementById("hparam-charts");
    const note = document.getElementById("hparams-note");
    note.textContent = data.rows.length < data.scored
      ? `${data.rows.length} of ${data.scored} scored trials: the ${data.rows.length < 200 ? data.rows.length : 200} best and an even spread of the rest.`
      : `${data.rows.length} scored trials, each at its best ${data.metric}.`;
    if (!data.params.length) { holder.replaceChildren(el("p", { class: "note", text: "No searched hyperparameters (all const)." })); return; }
    if (holder.children.length !== data.params.length) {
      holder.replaceChildren(...data.params.map((p, i) => el("div", { class: "card" }, el("div", { class: "chart small", id: `chart-hp-${i}` }))));
    }
    const metricIndex = 1;
    data.params.forEach((param, i) => {
      hpo.chart(`chart-hp-${i}`).setOption({
        animation: false, grid: { left: 60, right: 20, top: 30, bottom: 40 }, title: { text: param.name, textStyle: { fontSize: 13 } },
        tooltip: { trigger: "item", formatter: (p) => `trial ${esc(p.value[2])}<br>${esc(param.name)}: ${esc(typeof p.value[0] === "number" ? num(p.value[0]) : p.value[0])}<br>${esc(data.metric)}: ${esc(num(p.value[1]))}` },
        xAxis: { ...axisFor(param), nameLocation: "middle", nameGap: 24 }, yAxis: { type: "value", scale: true, name: data.metric },
        series: [{ type: "scatter", id: `hp-${param.name}`, large: data.rows.length > 2000, symbolSize: 6, itemStyle: { opacity: 0.7 },
                   data: data.rows.map((r) => [r[2 + i], r[metricIndex], r[0]]) }],
      }, { notMerge: true });
    });
    const axes = data.params.map((p, i) => ({ dim: i, ...axisFor(p) }));
    axes.push({ dim: data.params.length, type: "value", name: data.metric, scale: true, inverse: !data.smaller_is_better });
    const values = data.rows.length ? data.rows.map((r) => r[1]) : [0, 1];
    hpo.chart("chart-parallel").setOption({
      animation: false, parallel: { left: 60, right: 80, top: 40, bottom: 30 }, parallelAxis: axes,
      visualMap: { type: "continuous", dimension: data.params.length, min: Math.min(...values), max: Math.max(...values), inRange: { color: data.smaller_is_better ? ["#440154", "#21918c", "#fde725"] : ["#fde725", "#21918c", "#440154"] }, right: 0, top: "middle", calculable: true, text: ["", data.metric] },
      series: [{ type: "parallel", id: "parallel", lineStyle: { width: 1, opacity: 0.6 }, progressive: 500,
                 data: data.rows.map((r) => [...r.slice(2), r[1]]) }],
    }, { notMerge: true });
  }

  // The curves' request: the best trials', the table page's, or none for an empty page.
  function curvesUrl() {
    if (document.getElementById("curves-of").value !== "page") return apiUrl(name, "/curves");
    return table.shown.length ? apiUrl(name, `/curves?ids=${table.shown.join(",")}`) : null;
  }

  async function loadCharts() {
    const [, best, hparams] = await Promise.all([redrawCurves(), api(apiUrl(name, "/best")), api(apiUrl(name, "/hparams"))]);
    drawBest(best);
    drawHparams(hparams);
  }

  const charts = hpo.throttle(loadCharts, 5000);

  const fetchCurves = hpo.latest((url) => (url ? api(url) : Promise.resolve({ metric: summary ? summary.metric : "", scored: 0, best: null, curves: {}, parents: {} })));

  function redrawCurves() {
    return fetchCurves(curvesUrl()).then((data) => data && drawCurves(data)).catch((error) => hpo.showError("curves", error));
  }

  async function refresh() {
    summary = await api(apiUrl(name, ""));
    renderSummary(summary);
    await loadTable();  // first: the curves may follow the table's page
    await charts();
    hpo.markReady();
  }

  setupTable();
  hpo.watch(name, () => refresh().catch((error) => hpo.showError("experiment", error)));
})();
