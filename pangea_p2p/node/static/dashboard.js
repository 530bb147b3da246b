// The peer's dashboard: polls this peer's /v1 API and redraws. Plain JS, no build step, nothing from elsewhere.
// Every value from the API goes into the page as text (textContent), never as HTML.
"use strict";
(() => {
  const INTERVAL_MS = 1500;
  const TOKEN_KEY = "pangea-api-token";
  const TIMELINE_ROWS_MAX = 300;
  const JOB_ROWS_MAX = 50; // the newest jobs
  const STATES = ["done", "running", "verifying", "pending", "failed", "cancelled"];

  // The API token arrives in the address's fragment (#token=...): keep it for this tab, take it out of the bar.
  function takeToken() {
    const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (match) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }
  const token = takeToken();

  async function api(path) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const res = await fetch(path, { headers, cache: "no-store" });
    const body = await res.json().catch(() => null);
    if (!res.ok) {
      const why = body && body.error ? body.error.message : res.statusText;
      throw new Error(`${path}: HTTP ${res.status}: ${why}`);
    }
    return body;
  }

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (key === "data") Object.assign(node.dataset, value);
      else if (key === "style") Object.assign(node.style, value);
      else node[key] = value;
    }
    for (const child of children) node.append(child instanceof Node ? child : String(child));
    return node;
  }
  const $ = (id) => document.getElementById(id);
  const short = (id) => (id && id.length > 16 ? id.slice(0, 6) + "…" + id.slice(-6) : id || "");
  const num = (x, digits = 0) => (x === null || x === undefined ? "–" : Number(x).toLocaleString("en", {
    maximumFractionDigits: digits, minimumFractionDigits: digits }));
  const secs = (s) => (s === null || s === undefined ? "–" : s < 10 ? s.toFixed(2) + " s" : s < 600 ? s.toFixed(1) + " s"
    : (s / 60).toFixed(1) + " min");
  function fill(tbody, rows, emptyId) {
    tbody.replaceChildren(...rows);
    $(emptyId).hidden = rows.length > 0;
  }

  let selfId = "";
  let selected = null; // the job whose tasks the timeline shows (null: the newest)

  function renderSummary(id, health) {
    selfId = id.peer_id;
    const self = $("self-id");
    self.textContent = id.peer_id;
    self.dataset.peerId = id.peer_id;
    const boots = Object.values(health.bootstrap || {}).map((b) => b.status);
    $("summary").textContent = [
      `health ${health.status}`, `version ${id.version}`, `up ${secs(health.uptime_s)}`,
      `${health.connected_peers} connected`, `${health.routing_table_size} in routing table`,
      `${health.directory_size} adverts`, boots.length ? `bootstrap ${boots.join(", ")}` : "no bootstrap",
    ].join(" · ");
  }

  function renderPeers(peers) {
    const rows = peers.peers.map((p) => {
      const cap = p.capacity;
      return el("tr", { data: { peerId: p.peer_id } },
        el("td", {}, el("code", { title: (p.addrs || []).join("\n") }, p.peer_id)),
        el("td", {}, p.reached || (p.connected ? "direct" : "not connected")),
        el("td", { className: "num" }, p.rtt_ms === null ? "–" : num(p.rtt_ms, 2) + " ms"),
        el("td", { className: "num" }, cap ? cap.cores : "–"),
        el("td", { className: "num" }, cap ? `${cap.task_slots_free} / ${cap.task_slots_total}` : "–"),
        el("td", { className: "num" }, cap ? num(cap.speed_fuel_per_s) : "–"),
        el("td", {}, p.in_routing_table ? "yes" : "no"));
    });
    fill($("peers-body"), rows, "peers-empty");
  }

  function renderJobs(jobs) {
    const list = jobs.jobs;
    if (!list.some((j) => j.job_id === selected)) selected = list.length ? list[list.length - 1].job_id : null;
    const rows = list.slice(-JOB_ROWS_MAX).reverse().map((j) => {
      const done = j.progress.done || 0;
      const bar = el("div", { className: "bar", title: `${Math.round(j.fraction_done * 100)} % done` },
        el("span", { style: { width: `${j.fraction_done * 100}%` } }));
      const workers = Object.entries(j.workers).map(([w, n]) => `${w === selfId ? "here" : short(w)}: ${n}`);
      const row = el("tr", { className: "selectable" + (j.job_id === selected ? " selected" : ""),
          data: { jobId: j.job_id }, title: j.reason || "" },
        el("td", {}, el("code", {}, j.job_id)),
        el("td", { className: "st-" + j.state }, j.state),
        el("td", {}, bar),
        el("td", { className: "num" }, `${done} / ${j.tasks_total}`),
        el("td", { className: "num" }, secs(j.elapsed_s)),
        el("td", { className: "num" }, secs(j.eta_s)),
        el("td", {}, j.verification + (j.unchecked ? ` (${j.unchecked} unchecked)` : "")),
        el("td", {}, workers.join(", ")));
      row.addEventListener("click", () => { selected = j.job_id; refresh(); });
      return row;
    });
    fill($("jobs-body"), rows, "jobs-empty");
  }

  function verifiedText(t, policy) {
    const v = t.verification;
    const parts = [policy];
    if (v.replicas > 1) parts.push(`${t.backers.length} of ${v.replicas} replicas agreed`);
    if (v.spot_checks) parts.push(`${v.spot_checks} spot check${v.spot_checks > 1 ? "s" : ""}`);
    if (v.audit !== "none") parts.push(`audit ${v.audit}`);
    if (v.corrections) parts.push(`${v.corrections} correction${v.corrections > 1 ? "s" : ""}`);
    if (v.unchecked) parts.push(`unchecked: ${v.unchecked}`);
    else if (t.state === "done") parts.push(v.checked ? "checked" : "receipt verified");
    return parts.join(", ");
  }

  function where(t) {
    const name = (w) => (w === selfId ? "here" : short(w));
    if (t.backers.length > 1) return "ran on " + t.backers.map(name).join(", "); // the replicas that agreed
    if (t.worker) return "ran on " + name(t.worker);
    if (t.out_with.length) return "out with " + t.out_with.map(name).join(", ");
    return t.state;
  }

  function renderTimeline(doc) {
    $("timeline-job").textContent = doc ? doc.job_id : "–";
    const legend = STATES.map((s) => el("span", {}, el("i", { className: "s-" + s }), s));
    $("timeline-legend").replaceChildren(...legend);
    if (!doc) {
      $("timeline-rows").replaceChildren();
      $("timeline-axis").replaceChildren();
      $("timeline-note").hidden = true;
      return;
    }
    const tasks = doc.tasks.slice(0, TIMELINE_ROWS_MAX);
    const span = Math.max(doc.elapsed_s, ...tasks.map((t) => t.end_s || 0), 1e-3);
    const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => el("span", { style: { left: `${f * 100}%` } }, secs(f * span)));
    $("timeline-axis").replaceChildren(...ticks);
    const rows = tasks.map((t) => {
      const known = t.start_s !== null;
      const start = known ? t.start_s : 0;
      const end = t.end_s !== null ? t.end_s : doc.elapsed_s;
      const how = verifiedText(t, doc.verification);
      const seg = el("div", {
        className: `seg s-${t.state}` + (known ? "" : " unknown"),
        style: { left: `${(start / span) * 100}%`, width: `${(Math.max(end - start, 0) / span) * 100}%` },
        title: [`${t.task_id}: ${t.state}`, where(t), how, `fuel ${num(t.fuel_used)}`,
          known ? `from ${secs(start)} to ${t.end_s === null ? "now" : secs(end)}` : "times not seen by this run"]
          .join("\n"),
      }, t.worker ? (t.worker === selfId ? "here" : short(t.worker)) : "");
      return el("div", { className: "trow", data: { taskId: t.task_id, state: t.state, worker: t.worker || "" } },
        el("span", { className: "tid", title: t.task_id }, t.task_id),
        el("div", { className: "track" }, seg),
        el("span", { className: "tinfo" }, `${where(t)} · ${how}`));
    });
    $("timeline-rows").replaceChildren(...rows);
    const note = $("timeline-note");
    note.hidden = doc.tasks_total <= tasks.length;
    note.textContent = `Showing the first ${tasks.length} of ${doc.tasks_total} tasks.`;
  }

  function renderTrust(trust) {
    const rows = trust.trust.map((r) => el("tr", { data: { peerId: r.peer_id } },
      el("td", {}, el("code", {}, r.peer_id)), el("td", { className: "num" }, num(r.score, 2)),
      el("td", { className: "num" }, r.valid), el("td", { className: "num" }, r.invalid),
      el("td", { className: "num" }, r.timeouts), el("td", { className: "num" }, r.outvoted),
      el("td", { className: "num" }, r.lies)));
    fill($("trust-body"), rows, "trust-empty");
  }

  function renderRejections(capacity) {
    const rows = Object.entries(capacity.rejected).filter(([, n]) => n > 0)
      .map(([reason, n]) => el("tr", {}, el("td", {}, reason), el("td", { className: "num" }, n)));
    fill($("rejections-body"), rows, "rejections-empty");
  }

  function renderErrors(errors) {
    const rows = errors.records.map((r) => el("tr", {},
      el("td", {}, new Date(r.ts * 1000).toISOString().slice(11, 23)),
      el("td", { className: "lvl-" + r.level }, r.level),
      el("td", {}, el("code", {}, r.event)),
      el("td", {}, Object.entries(r.fields).map(([k, v]) => `${k}=${v}`).join(" "))));
    fill($("errors-body"), rows, "errors-empty");
  }

  let timer = null;
  async function refresh() {
    clearTimeout(timer);
    const names = ["id", "health", "peers", "capacity", "jobs", "trust", "errors"];
    const results = await Promise.allSettled(names.map((n) => api("/v1/" + n)));
    const got = {};
    const problems = [];
    results.forEach((r, i) => (r.status === "fulfilled" ? (got[names[i]] = r.value) : problems.push(r.reason.message)));
    const draw = [
      ["id", () => got.health && renderSummary(got.id, got.health)], ["peers", () => renderPeers(got.peers)],
      ["jobs", () => renderJobs(got.jobs)], ["trust", () => renderTrust(got.trust)],
      ["capacity", () => renderRejections(got.capacity)], ["errors", () => renderErrors(got.errors)],
    ];
    for (const [name, fn] of draw) {
      if (got[name]) {
        try { fn(); } catch (exc) { problems.push(`${name}: ${exc.message}`); }
      }
    }
    if (got.jobs) {
      let doc = null;
      if (selected) {
        try { doc = await api(`/v1/jobs/${encodeURIComponent(selected)}/tasks?limit=${TIMELINE_ROWS_MAX}`); }
        catch (exc) { problems.push(exc.message); }
      }
      renderTimeline(doc);
    }
    const status = $("status");
    status.className = "status" + (problems.length ? " error" : "");
    status.textContent = problems.length ? problems.join(" · ")
      : "updated " + new Date().toISOString().slice(11, 19) + " UTC";
    if (!problems.length) document.body.dataset.ready = "1";
    timer = setTimeout(refresh, INTERVAL_MS);
  }

  $("interval").textContent = String(INTERVAL_MS / 1000);
  refresh();
})();
