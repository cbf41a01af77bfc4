// 2 to 5 trials side by side: their state, metrics, lengths and hyperparameters (the ones that
// differ marked), and their learning curves on one chart.
"use strict";
(() => {
  const { el, api, num, state, apiUrl, expUrl } = hpo;
  const name = hpo.experimentName();
  const ids = new URLSearchParams(location.search).get("ids") || "";

  document.title = `compare · ${name} · hpo-slurm`;
  document.getElementById("crumbs").append(" / ", el("a", { href: expUrl(name), text: name }), " / compare");

  function render(data) {
    const trials = data.trials;
    document.getElementById("title").textContent = `Compare trials ${trials.map((t) => t.id).join(", ")}`;
    document.querySelector("#compare-table thead").replaceChildren(el("tr", {}, el("th", {}, ""),
      ...trials.map((t) => el("th", {}, el("a", { href: `${expUrl(name)}/trials/${t.id}`, text: `trial ${t.id}` })))));
    const rows = [
      ["state", (t) => state(t.state)],
      [`best ${data.metric}`, (t) => num(t.best_metric)],
      ["at length", (t) => t.best_length === null ? "-" : String(t.best_length)],
      [`latest ${data.metric}`, (t) => num(t.latest_metric)],
      ["validated length", (t) => String(t.validated_length)],
      ["runs", (t) => String(t.runs.length)],
      ["restarts", (t) => String(t.restarts)],
      ["preemptions", (t) => String(t.preemptions)],
      ["time limits", (t) => String(t.time_limits)],
    ].map(([label, cell]) => el("tr", {}, el("th", { text: label }), ...trials.map((t) => el("td", {}, cell(t)))));
    const keys = [...new Set(trials.flatMap((t) => hpo.flatten(t.hparams).map(([k]) => k)))].sort();
    for (const key of keys) {
      const values = trials.map((t) => { const found = hpo.flatten(t.hparams).find(([k]) => k === key); return found ? (typeof found[1] === "string" ? found[1] : JSON.stringify(found[1])) : "-"; });
      const differs = new Set(values).size > 1;
      rows.push(el("tr", { class: differs ? "diff" : null, "data-hparam": key }, el("th", { class: "hp", text: key }), ...values.map((v) => el("td", { class: "hp", text: v }))));
    }
    document.querySelector("#compare-table tbody").replaceChildren(...rows);
    hpo.chart("chart-compare").setOption({
      animation: false, grid: { left: 70, right: 30, top: 40, bottom: 50 }, legend: { top: 5 }, tooltip: { trigger: "axis" },
      xAxis: { type: "value", name: `length (${data.unit})`, nameLocation: "middle", nameGap: 28 },
      yAxis: { type: "value", scale: true, name: data.metric },
      series: trials.map((t) => ({ type: "line", name: `trial ${t.id}`, id: `trial-${t.id}`, data: t.curve, symbolSize: 5 })),
    }, { notMerge: true });
    hpo.markReady();
  }

  hpo.watch(name, () => api(apiUrl(name, `/compare?ids=${encodeURIComponent(ids)}`)).then(render).catch((error) => hpo.showError("compare", error)));
})();
