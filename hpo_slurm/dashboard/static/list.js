// The experiment list: every experiment under the root, refreshed every few seconds.
"use strict";
(() => {
  const { el, api, num, state, when, expUrl } = hpo;

  function row(e) {
    if (e.error) return el("tr", {}, el("td", {}, el("a", { href: expUrl(e.name), text: e.name })), el("td", { colspan: 7, class: "muted", text: `cannot be read: ${e.error}` }));
    const best = e.best ? el("span", {}, `${num(e.best.metric)} `, el("a", { href: `${expUrl(e.name)}/trials/${e.best.trial_id}`, text: `trial ${e.best.trial_id}` })) : "-";
    const counts = Object.entries(e.trials).map(([s, n]) => `${n} ${s.toLowerCase()}`).join(", ");
    return el("tr", { "data-name": e.name },
      el("td", {}, el("a", { href: expUrl(e.name), text: e.title }), e.title !== e.name ? el("span", { class: "muted", text: ` (${e.name})` }) : null),
      el("td", {}, state(e.state)),
      el("td", { text: e.sampler && e.sampler !== "random" ? `${e.searcher} (${e.sampler})` : e.searcher }),
      el("td", { text: e.driver_alive ? "alive" : "-" }),
      el("td", {}, `${Math.round(e.progress * 100)}%`, el("div", { class: "progress" }, el("div", { style: `width:${Math.round(e.progress * 100)}%` }))),
      el("td", { title: counts, text: String(e.trial_count) }),
      el("td", {}, best),
      el("td", { text: when(e.created_at) }));
  }

  async function refresh() {
    try {
      const experiments = await api("/api/experiments");
      document.querySelector("#experiments tbody").replaceChildren(...experiments.map(row));
      document.getElementById("root-note").textContent = experiments.length ? "" : "No experiments under this root yet.";
      const alive = experiments.some((e) => e.driver_alive);
      const live = document.getElementById("live");
      live.classList.toggle("on", alive);
      live.lastChild.textContent = alive ? "live: a driver is running" : "no driver running";
      hpo.clearError();
      hpo.markReady();
    } catch (error) { hpo.showError("experiments", error); }
    setTimeout(refresh, 3000);
  }
  document.title = "experiments · hpo-slurm";
  refresh();
})();
