// The dashboard page: the job list and one job's page, kept live by the
// server's event stream (/api/stream). Every text from a job (log, error,
// names) is put into the page with textContent, never as HTML.
"use strict";

const jobs = new Map();
let current = null; // the job whose page is open
let follow = true;  // the log scrolls with new lines until the user scrolls up
let shown = { attempt: 0, seq: 0 }; // the open job's last event on the page

const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function duration(job) {
  const end = job.finished ? Date.parse(job.updated_at) : Date.now();
  const secs = Math.max(0, (end - Date.parse(job.started_at)) / 1000);
  return secs < 60 ? secs.toFixed(1) + " s" : Math.floor(secs / 60) + " min " + Math.round(secs % 60) + " s";
}

function renderList() {
  const service = $("filter-service").value;
  const status = $("filter-status").value;
  const body = document.querySelector("#jobs tbody");
  body.replaceChildren();
  const services = new Set();
  const rows = [...jobs.values()].sort((a, b) => Date.parse(b.started_at) - Date.parse(a.started_at));
  for (const job of rows) {
    services.add(job.service_id);
    if (service && job.service_id !== service) continue;
    if (status && job.status !== status) continue;
    const tr = el("tr", null, "job");
    tr.dataset.jobId = job.job_id;
    tr.append(el("td", job.service_id), el("td", job.job_id), el("td", job.attempt),
      el("td", job.status, "status-" + job.status), el("td", job.step || ""),
      el("td", job.worker || ""), el("td", new Date(job.started_at).toLocaleTimeString()),
      el("td", duration(job)));
    tr.addEventListener("click", () => { location.hash = "#/jobs/" + encodeURIComponent(job.job_id); });
    body.append(tr);
  }
  const select = $("filter-service");
  const known = new Set([...select.options].map((o) => o.value));
  for (const name of [...services].sort()) {
    if (!known.has(name)) select.append(el("option", name));
  }
}

// ANSI SGR colours: the text between escapes goes into spans by
// textContent; only the class names come from the escape codes.
function appendAnsi(target, text) {
  const parts = text.split(/\x1b\[([0-9;]*)m/);
  let classes = [];
  for (let i = 0; i < parts.length; i++) {
    if (i % 2 === 1) {
      const codes = parts[i] === "" ? ["0"] : parts[i].split(";");
      for (const code of codes) {
        if (code === "0") classes = [];
        else if (code === "1" || (Number(code) >= 30 && Number(code) <= 37)) classes.push("ansi-" + code);
      }
    } else if (parts[i]) {
      target.append(classes.length ? el("span", parts[i], classes.join(" ")) : document.createTextNode(parts[i]));
    }
  }
}

function appendLog(text, missing) {
  const log = $("log");
  if (missing > 0) log.append(el("span", "[" + missing + " event(s) missing here]\n", "gap"));
  appendAnsi(log, text);
  if (follow) log.scrollTop = log.scrollHeight;
}

function renderJob(view) {
  shown = { attempt: view.attempt, seq: view.last_seq };
  $("job-title").textContent = view.service_id + " / " + view.job_id;
  const summary = $("job-summary");
  summary.replaceChildren(el("span", view.status, "status-" + view.status),
    el("span", "  attempt " + view.attempt + (view.worker ? " on " + view.worker : "")));
  renderTimeline(view.steps);
  renderResult(view.result);
  const log = $("log");
  log.replaceChildren();
  if (view.missing > 0) log.append(el("span", "[" + view.missing + " event(s) missing in this log]\n", "gap"));
  appendAnsi(log, view.log);
  if (view.log_dropped > 0) log.append(el("span", "\n[" + view.log_dropped + " bytes not kept by the dashboard]\n", "notice"));
  if (follow) log.scrollTop = log.scrollHeight;
}

function renderTimeline(steps) {
  const list = $("timeline");
  list.replaceChildren();
  const started = new Map();
  for (const change of steps) {
    if (change.state === "started") { started.set(change.step, change.at); continue; }
    const from = started.get(change.step);
    const took = from ? ((Date.parse(change.at) - Date.parse(from)) / 1000).toFixed(1) + " s" : "";
    list.append(el("li", change.step + " " + change.state + " " + took));
    started.delete(change.step);
  }
  for (const step of started.keys()) list.append(el("li", step + " running…", "status-running"));
}

function copyButton(text) {
  const button = el("button", "copy");
  button.addEventListener("click", () => navigator.clipboard && navigator.clipboard.writeText(text));
  return button;
}

function renderResult(result) {
  const box = $("result");
  box.replaceChildren();
  if (!result) return;
  if (result.image) {
    const image = result.image;
    const digest = image.repository + "@" + image.digest;
    box.append(el("div", "tags: " + image.tags.join(", ")));
    const line = el("div", "digest: ");
    line.append(el("code", digest), copyButton(digest));
    box.append(line);
  }
  if (result.error) {
    const error = result.error;
    const text = "error in " + error.step + ": " + error.message +
      (error.exit_code !== undefined && error.exit_code !== null ? " (exit code " + error.exit_code + ")" : "");
    box.append(el("div", text, "status-failed"));
  }
}

async function loadList() {
  const response = await fetch("/api/jobs");
  const data = await response.json();
  jobs.clear();
  for (const job of data.jobs) jobs.set(job.job_id, job);
  $("evicted").textContent = data.evicted ? data.evicted + " older job(s) no longer kept" : "";
  showConnection(data.connected, data.queue);
  renderList();
}

function setPill(live, why) {
  const pill = $("connection");
  pill.textContent = live ? "live" : why || "reconnecting…";
  pill.className = live ? "pill ok" : "pill";
}

function showConnection(connected, queue) {
  setPill(connected, "not connected to RabbitMQ");
  if (queue) {
    const show = (v) => (v === null || v === undefined ? "?" : v);
    $("queue").textContent = queue.queue + ": " + show(queue.ready) + " ready, " + queue.running +
      " running, " + show(queue.consumers) + " consumers, " + show(queue.dead_lettered) + " dead-lettered";
  }
}

async function openJob(jobId) {
  current = jobId;
  follow = true;
  const response = await fetch("/api/jobs/" + encodeURIComponent(jobId));
  if (!response.ok) { $("job-title").textContent = "job " + jobId + " is not in this dashboard's memory"; return; }
  if (current === jobId) renderJob(await response.json());
}

function route() {
  const match = location.hash.match(/^#\/jobs\/(.+)$/);
  $("list-view").hidden = !!match;
  $("job-view").hidden = !match;
  if (match) { openJob(decodeURIComponent(match[1])); return; }
  // `#/?service=web&status=failed`: the list's filters, linkable.
  const query = new URLSearchParams(location.hash.replace(/^#\/?\??/, ""));
  for (const name of ["service", "status"]) {
    const select = $("filter-" + name);
    const wanted = query.get(name);
    if (wanted && ![...select.options].some((o) => o.value === wanted)) select.append(el("option", wanted));
    if (wanted !== null) select.value = wanted;
  }
  current = null;
  loadList();
}

function onUpdate(update) {
  jobs.set(update.job.job_id, update.job);
  if (current === null) { renderList(); return; }
  if (update.job.job_id !== current) return;
  if (update.job.attempt === shown.attempt && update.seq <= shown.seq) return; // already on the page
  const isLog = update.log !== null && update.log !== undefined;
  if (isLog && update.job.attempt === shown.attempt) {
    shown.seq = update.seq;
    appendLog(update.log, update.missing_before);
  } else {
    openJob(current); // a step, the result or a new attempt: redraw from the server's view
  }
}

function connect() {
  const source = new EventSource("/api/stream");
  source.addEventListener("update", (e) => onUpdate(JSON.parse(e.data)));
  source.addEventListener("reload", () => route());
  source.addEventListener("open", () => { setPill(true); route(); });
  source.addEventListener("error", () => setPill(false));
}

document.addEventListener("DOMContentLoaded", () => {
  $("filter-service").addEventListener("change", renderList);
  $("filter-status").addEventListener("change", renderList);
  $("log").addEventListener("scroll", () => {
    const log = $("log");
    follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    $("follow").textContent = follow ? "" : "paused — scroll to the end to follow";
  });
  window.addEventListener("hashchange", route);
  setInterval(() => { if (current === null) loadList(); }, 5000);
  route();
  connect();
});
