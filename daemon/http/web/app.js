// vidspool dashboard: devices, queue, jobs with live progress (SSE, polling as a fallback),
// a submit form (JSON or fields + files), result previews. Plain JS, no build step, no CDN.
"use strict";
(() => {
  const API = "/api/v1";
  const FINAL = new Set(["completed", "failed", "canceled"]);
  const CANCELABLE = new Set(["queued", "running"]);
  const TOKEN_KEY = "vidspool.token";
  const PAGE = 50;              // rows shown, "Show more" adds as many
  const LIST_PAGE = 1000;       // jobs per /jobs request (the API's maximum)
  const LIST_PAGES = 5;         // at most this many pages per full refresh
  const QUEUE_POLL_MS = 2000;
  const JOBS_POLL_MS = 2000;    // only while the event stream is down
  const SAFETY_REFRESH_MS = 30000;
  // The common params each kind takes from the form; other kinds show all three fields.
  const KIND_FIELDS = {
    "text-to-video": ["prompt"], "image-to-video": ["prompt"], "video-to-video": ["prompt"],
    "tts": ["text"], "narrated-video": ["text"], "talking-head": ["text"], "slideshow": ["slides"],
  };

  const $ = (sel, root = document) => root.querySelector(sel);

  const state = {
    token: readToken(),
    authNeeded: false,
    info: null,
    jobs: new Map(),      // id -> what we know (list summary merged with status documents)
    docs: new Map(),      // id -> full status document (kept once final: it no longer changes)
    docWanted: [],        // ids whose full document a row needs (thumbnail, error message)
    docPending: new Set(),
    queue: new Map(),     // queued id -> position
    devices: null,        // GET /queue's devices, as last polled (null: not yet)
    devicesKey: "",       // what the device cards show now (redrawn only when it changes)
    queuePolling: false,
    queueAgain: false,    // asked for while a poll was in flight: poll again when it ends
    visible: PAGE,
    filter: "",
    mode: "connecting",   // how job updates arrive: sse | polling | connecting
    es: null,
    esRetry: null,
    sseFailed: false,
    pollTimer: null,
    pollTicks: 0,
    listSize: 0,
    loadingJobs: null,
    reloadJobs: false,
    details: null,        // the job shown in the dialog
    paused: null,         // the queue's pause (GET /queue's `paused`), or null
    detailsState: null,
    fresh: new Set(),     // just submitted here: highlighted
  };
  // For people poking at the page (and the browser test): no reload ever happens.
  window.vidspool = { state, loadedAt: Date.now() };

  // -- small helpers ------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
      else if (k in node && typeof v !== "string") node[k] = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function readToken() {
    try { return localStorage.getItem(TOKEN_KEY) || ""; } catch { return ""; }
  }

  function writeToken(token) {
    state.token = token;
    try {
      if (token) localStorage.setItem(TOKEN_KEY, token); else localStorage.removeItem(TOKEN_KEY);
    } catch { /* private mode: the token lives as long as the page */ }
  }

  // URLs the browser fetches by itself (EventSource, <img>, <video>, links) cannot carry a
  // header: the token goes in the query (GETs only; the API accepts ?access_token=).
  function authed(url) {
    if (!state.token) return url;
    return url + (url.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(state.token);
  }

  const jobPath = (id) => `/jobs/${encodeURIComponent(id)}`;
  const fileUrl = (id, f) => f.url || `${API}/jobs/${encodeURIComponent(id)}/files/${encodeURIComponent(f.name)}`;
  // A running job's live preview (status `preview`): the step in the URL makes each new one a fresh fetch.
  const previewUrl = (job) => (job.state === "running" && job.preview && job.preview.url
    ? authed(`${job.preview.url}?step=${encodeURIComponent(job.preview.step)}`) : null);

  function fmtBytes(n) {
    if (n === null || n === undefined || isNaN(n)) return "?";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
  }

  function fmtSeconds(s) {
    if (s === null || s === undefined || isNaN(s)) return "";
    s = Math.max(0, Math.round(s));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  function fmtTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    const today = new Date().toDateString() === d.toDateString();
    return today ? d.toLocaleTimeString() : d.toLocaleString();
  }

  function pct(job) {
    if (job.state === "completed") return 100;
    const p = Number(job.progress);
    return isFinite(p) ? Math.min(100, Math.max(0, p)) : 0;
  }

  // -- the API ------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function errorFrom(response) {
    let code = "http_" + response.status, message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.error) { code = body.error.code || code; message = body.error.message || message; }
    } catch { /* not JSON */ }
    return new ApiError(response.status, code, message);
  }

  async function api(path, { method = "GET", body, headers = {} } = {}) {
    const h = { Accept: "application/json", ...headers };
    if (state.token) h.Authorization = `Bearer ${state.token}`;
    let response;
    try {
      response = await fetch(API + path, { method, body, headers: h, cache: "no-store" });
    } catch (exc) {
      setHealth("offline", "the daemon does not answer");
      throw new ApiError(0, "offline", "the daemon does not answer");
    }
    if (!response.ok) {
      const err = await errorFrom(response);
      if (response.status === 401) needAuth(err.message);
      throw err;
    }
    return (response.headers.get("Content-Type") || "").includes("json") ? response.json() : response;
  }

  // multipart with upload progress (fetch cannot report it)
  function upload(form, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", API + "/jobs");
      xhr.setRequestHeader("Accept", "application/json");
      if (state.token) xhr.setRequestHeader("Authorization", `Bearer ${state.token}`);
      xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); });
      xhr.addEventListener("error", () => reject(new ApiError(0, "offline", "upload failed: the daemon does not answer")));
      xhr.addEventListener("load", () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
        if (xhr.status >= 200 && xhr.status < 300) return resolve(body);
        const e = (body && body.error) || {};
        if (xhr.status === 401) needAuth(e.message);
        reject(new ApiError(xhr.status, e.code || "http_" + xhr.status, e.message || `${xhr.status} ${xhr.statusText}`));
      });
      xhr.send(form);
    });
  }

  // -- messages -----------------------------------------------------------------------------
  let errorTimer = null;
  function showError(message) {
    $("#error-text").textContent = message;
    $("#error-banner").hidden = false;
    clearTimeout(errorTimer);
    errorTimer = setTimeout(hideError, 15000);
  }
  function hideError() { $("#error-banner").hidden = true; }

  function report(exc, what) {
    if (exc instanceof ApiError && (exc.status === 401 || exc.status === 0)) return; // shown elsewhere
    showError(what ? `${what}: ${exc.message}` : exc.message);
  }

  function setSubmitStatus(text, kind) {
    const p = $("#submit-status");
    p.textContent = text;
    p.dataset.kind = kind || "";
  }

  function setHealth(health, reason) {
    const pill = $("#health");
    pill.dataset.health = health;
    pill.textContent = health === "ok" ? "healthy" : health;
    pill.title = reason || "";
  }

  function setMode(mode) {
    state.mode = mode;
    const pill = $("#live");
    pill.dataset.mode = mode;
    pill.textContent = { sse: "live", polling: "polling", connecting: "connecting" }[mode] || mode;
    pill.title = mode === "sse" ? "updates arrive as server-sent events"
      : mode === "polling" ? "the event stream is unavailable: refreshing every 2 s" : "";
  }

  // -- auth ---------------------------------------------------------------------------------
  function needAuth(message) {
    const first = !state.authNeeded;
    state.authNeeded = true;
    const panel = $("#auth");
    panel.hidden = false;
    $("#token-forget").hidden = !state.token;
    if (first) {
      showError(state.token ? `The token was refused: ${message || "unauthorized"}` : "This daemon needs an access token.");
      $("#token").focus();
    }
  }

  function restart() {
    state.authNeeded = false;
    $("#auth").hidden = true;
    hideError();
    loadInfo();
    loadJobs();
    pollQueue();
    connectEvents();
    if (state.details) openDetails(state.details);
  }

  // -- info, health, devices, queue -----------------------------------------------------------
  async function loadInfo() {
    try {
      const info = await api("/info");
      state.info = info;
      $("#info").textContent = `${info.host} · v${info.version}`;
      const select = $("#kind");
      const current = select.value;
      select.replaceChildren(...(info.kinds || []).map((k) => el("option", { value: k, text: k })));
      const kinds = info.kinds || [];
      select.value = kinds.includes(current) ? current : kinds.includes("slideshow") ? "slideshow" : kinds[0] || "";
      kindChanged();
    } catch (exc) {
      report(exc, "info");
    }
  }

  async function pollHealth() {
    try {
      const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
      const r = await fetch(API + "/health", { headers, cache: "no-store" });
      const body = await r.json().catch(() => ({}));
      setHealth(r.ok ? "ok" : "unhealthy", body.reason || (body.error && body.error.message) || "");
    } catch {
      setHealth("offline", "the daemon does not answer");
    }
  }

  async function pollQueue() {
    clearTimeout(state.queueTimer);
    if (state.queuePolling) { state.queueAgain = true; return; }  // one poll at a time, one timer
    state.queuePolling = true;
    if (!state.authNeeded) {
      try {
        const q = await api("/queue");
        state.devices = q.devices || [];
        scheduleRender();  // cards and rows in one frame: a card never runs ahead of its job's row
        renderQueue(q.queued || []);
        renderPause(q.paused || null);
      } catch (exc) {
        if (exc.status !== 401 && exc.status !== 0) report(exc, "queue");
      }
    }
    state.queuePolling = false;
    if (state.queueAgain) { state.queueAgain = false; pollQueue(); return; }
    state.queueTimer = setTimeout(pollQueue, document.hidden ? QUEUE_POLL_MS * 5 : QUEUE_POLL_MS);
  }

  // A device as the status events tell it, between polls: the job they say runs on it (with
  // its model) is busy at once; a job they say has ended no longer is. Jobs of this host only
  // (devices of other hosts sharing the spool have the same names).
  function deviceNow(d) {
    const host = state.info && state.info.host;
    let running = null;
    for (const job of host ? state.jobs.values() : []) {
      if (job.state === "running" && job.device === d.device && job.host === host
          && (!running || job._seen > running._seen)) running = job;
    }
    const polled = d.job ? state.jobs.get(d.job) : null;
    const job = running ? running.id : d.job && !(polled && FINAL.has(polled.state)) ? d.job : null;
    const models = [...(d.models || [])];
    if (running && running.model && !models.includes(running.model)) models.push(running.model);
    return { ...d, busy: !!job, job, models };
  }

  function deviceBadge(d) {
    if (!d.alive) return ["down", "down"];
    if (!d.ready) return ["starting", "starting"];
    if (d.busy) return ["busy", "busy"];
    if (d.loading && d.loading.length) return ["loading", "loading model"];
    return ["idle", "idle"];
  }

  function renderDevices() {
    if (!state.devices) return;  // "loading…" until the first answer
    const devices = state.devices.map(deviceNow);
    const key = JSON.stringify(devices);
    if (key === state.devicesKey) return;  // unchanged: keep the cards (and a click on them)
    state.devicesKey = key;
    const box = $("#devices");
    if (!devices.length) {
      box.replaceChildren(el("p", { class: "muted", text: "No workers." }));
      return;
    }
    box.replaceChildren(...devices.map((d) => {
      const [badge, label] = deviceBadge(d);
      const mem = d.memory && d.memory.total ? d.memory : null;
      const memPct = mem ? Math.min(100, (100 * mem.used) / mem.total) : 0;
      return el("article", { class: "device", "data-device": d.device, "data-busy": String(!!d.busy), "data-status": badge },
        el("header", {},
          el("h3", { text: d.device }),
          el("span", { class: `pill badge-${badge}`, text: label })),
        el("p", { class: "device-job" }, d.job
          ? ["job ", el("button", { type: "button", class: "link job-link", "data-open": d.job, text: d.job })]
          : el("span", { class: "muted", text: "no job" })),
        el("p", { class: "device-models" },
          el("span", { class: "muted", text: "models: " }),
          (d.models && d.models.length ? d.models.join(", ") : "none"),
          d.loading && d.loading.length ? el("span", { class: "muted", text: ` (loading ${d.loading.join(", ")})` }) : null),
        mem ? el("div", { class: "memory" },
          el("div", { class: "progress small", role: "progressbar", "aria-label": "memory",
                      "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(Math.round(memPct)) },
            el("div", { class: "bar", style: `width:${memPct.toFixed(1)}%` })),
          el("span", { class: "muted memory-text", text: `memory ${fmtBytes(mem.used)} / ${fmtBytes(mem.total)}` }))
          : el("p", { class: "muted memory-text", text: "memory: unknown" }),
        el("p", { class: "muted small-text", text:
          `pid ${d.pid ?? "–"} · ${d.jobs_done ?? 0} jobs done · ${d.restarts ?? 0} restarts · ${d.model_loads ?? 0} model loads` }));
    }));
  }

  function renderQueue(queued) {
    state.queue = new Map(queued.map((q) => [q.id, q.position]));
    $("#queue-count").textContent = queued.length ? `(${queued.length})` : "";
    $("#queue-empty").hidden = queued.length > 0;
    $("#queue").replaceChildren(...queued.map((q) =>
      el("li", { "data-queued-id": q.id },
        el("button", { type: "button", class: "link job-link", "data-open": q.id, text: q.id }),
        q.priority ? el("span", { class: "muted", text: ` priority ${q.priority}` }) : null)));
    for (const [id, position] of state.queue) {
      const job = state.jobs.get(id);
      if (job && job.queue_position !== position) { job.queue_position = position; scheduleRender(); }
    }
  }

  // -- pause and resume (POST /pause, /resume: every host sharing the spool obeys) -------------
  function renderPause(paused) {
    state.paused = paused;
    const pill = $("#paused"), button = $("#pause-toggle");
    pill.hidden = !paused;
    if (paused) {
      const why = paused.reason || (paused.scope === "host" ? `host ${paused.host}` : "");
      pill.textContent = why ? `paused (${why})` : "paused";
      pill.title = [paused.by && `by ${paused.by}`, paused.since && `since ${fmtTime(paused.since)}`].filter(Boolean).join(", ");
    }
    button.textContent = paused ? "Resume" : "Pause queue";
    button.dataset.paused = String(!!paused);
  }

  async function togglePause(button) {
    button.disabled = true;
    const resume = !!state.paused;
    try {
      const res = await api(resume ? "/resume" : "/pause", {
        method: "POST", body: "{}", headers: { "Content-Type": "application/json" } });
      renderPause(res.queue_paused || null);
      setSubmitStatus(resume ? "Queue resumed" : "Queue paused: nothing new starts; running jobs finish", "ok");
    } catch (exc) {
      report(exc, resume ? "resume" : "pause");
    } finally {
      button.disabled = false;
    }
  }

  // -- jobs ---------------------------------------------------------------------------------
  // One place where whatever we learn about a job (list summary, status document, event)
  // is merged. A job never leaves a final state, so an older answer cannot undo a newer one.
  function upsert(doc) {
    if (!doc || !doc.id) return;
    const prev = state.jobs.get(doc.id);
    if (prev && FINAL.has(prev.state) && !FINAL.has(doc.state)) return;
    const job = prev && prev.state === doc.state ? { ...prev, ...doc } : { ...doc };
    job._seen = performance.now();
    state.jobs.set(doc.id, job);
    // A job that leaves a device: what the worker holds now (its models) is the queue's to say.
    if (prev && prev.state === "running" && job.state !== "running") pollQueue();
    if ("job" in doc) {  // a full status document (list entries carry no "job")
      if (FINAL.has(doc.state)) state.docs.set(doc.id, doc); else state.docs.delete(doc.id);
    }
    if (state.details === doc.id) detailsUpdate(job);
    scheduleRender();
  }

  async function loadJobs() {
    if (state.authNeeded) return;
    if (state.loadingJobs) { state.reloadJobs = true; return state.loadingJobs; }
    const started = performance.now();
    state.loadingJobs = (async () => {
      try {
        const all = [];
        let cursor = null, capped = false;
        for (let page = 0; page < LIST_PAGES; page++) {
          const res = await api(`/jobs?limit=${LIST_PAGE}` + (cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""));
          all.push(...(res.jobs || []));
          cursor = res.next_cursor;
          if (!cursor) break;
          capped = page === LIST_PAGES - 1;
        }
        const seen = new Set(all.map((j) => j.id));
        if (!capped) {  // jobs removed from the outbox (not those we heard of meanwhile)
          for (const [id, job] of state.jobs) {
            if (!seen.has(id) && job.state !== "submitted" && job._seen < started) state.jobs.delete(id);
          }
        }
        for (const j of all) upsert(j);
        state.listSize = all.length;
        scheduleRender();
      } catch (exc) {
        report(exc, "jobs");
      } finally {
        state.loadingJobs = null;
        if (state.reloadJobs) { state.reloadJobs = false; loadJobs(); }
      }
    })();
    return state.loadingJobs;
  }

  async function refreshJob(id, { quiet404 = true } = {}) {
    try {
      upsert(await api(jobPath(id)));
    } catch (exc) {
      if (!(quiet404 && exc.status === 404)) report(exc, id);
    }
  }

  // The jobs that may still change, one by one (cheaper than the whole list).
  function refreshActive(limit = 20) {
    const active = [...state.jobs.values()].filter((j) => !FINAL.has(j.state)).slice(0, limit);
    return Promise.all(active.map((j) => refreshJob(j.id)));
  }

  // Rows need the full document of final jobs: the thumbnail, the error message.
  function wantDoc(id) {
    if (state.docs.has(id) || state.docPending.has(id) || state.docWanted.includes(id)) return;
    state.docWanted.push(id);
    pumpDocs();
  }

  function pumpDocs() {
    while (state.docPending.size < 3 && state.docWanted.length) {
      const id = state.docWanted.shift();
      state.docPending.add(id);
      api(jobPath(id))
        .then(upsert)
        .catch((exc) => { if (exc.status !== 404) state.docs.set(id, { id, _failed: true }); })
        .finally(() => { state.docPending.delete(id); pumpDocs(); });
    }
  }

  // -- live updates ---------------------------------------------------------------------------
  function connectEvents() {
    clearTimeout(state.esRetry);
    if (state.es) { state.es.close(); state.es = null; }
    if (!("EventSource" in window)) { startPolling(); return; }
    const es = new EventSource(authed(API + "/events"));
    state.es = es;
    es.addEventListener("open", () => {
      if (es !== state.es) return;
      setMode("sse");
      stopPolling();
      if (state.sseFailed) { state.sseFailed = false; loadJobs(); }  // catch up on what we missed
    });
    es.addEventListener("status", (e) => {
      try { upsert(JSON.parse(e.data)); } catch { /* a broken event: the next one will do */ }
    });
    es.addEventListener("reset", () => loadJobs());
    es.addEventListener("preview", (e) => {  // also in the status events; this one names only the preview
      try {
        const p = JSON.parse(e.data), job = state.jobs.get(p.id);
        if (!job || job.state !== "running") return;
        job.preview = { url: p.url, step: p.step };
        if (state.details === p.id) detailsUpdate(job);
        scheduleRender();
      } catch { /* a broken event: the next one will do */ }
    });
    es.addEventListener("error", () => {
      if (es !== state.es) return;
      state.sseFailed = true;
      startPolling();
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (404, 401, not an event stream): poll, and try again later.
        state.es = null;
        state.esRetry = setTimeout(connectEvents, 15000);
      }
    });
  }

  function startPolling() {
    setMode("polling");
    if (state.pollTimer) return;
    const tick = async () => {
      state.pollTicks++;
      // small spools: the whole list every tick; big ones: active jobs, the list every 10 s
      if (state.listSize <= 200 || state.pollTicks % 5 === 0) await loadJobs();
      else await refreshActive();
      if (state.pollTimer) state.pollTimer = setTimeout(tick, JOBS_POLL_MS);
    };
    state.pollTimer = setTimeout(tick, 0);
  }

  function stopPolling() {
    clearTimeout(state.pollTimer);
    state.pollTimer = null;
  }

  // -- rendering the job list -------------------------------------------------------------------
  let renderQueued = false;
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => { renderQueued = false; renderJobs(); });
  }

  function matchesFilter(job) {
    const f = state.filter;
    if (!f) return true;
    if (f === "active") return !FINAL.has(job.state);
    return job.state === f;
  }

  function newestFirst(a, b) {
    // just-submitted jobs (no created_at yet) on top, then by created_at, then by id
    const ca = a.created_at || "\uffff", cb = b.created_at || "\uffff";
    if (ca !== cb) return ca < cb ? 1 : -1;
    return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
  }

  function renderJobs() {
    renderDevices();  // the cards follow the same events as the rows, in the same frame
    const body = $("#jobs-body");
    const all = [...state.jobs.values()];
    const list = all.filter(matchesFilter).sort(newestFirst);
    const shown = list.slice(0, state.visible);
    const rows = new Map([...body.children].map((tr) => [tr.dataset.jobId, tr]));
    shown.forEach((job, i) => {
      let tr = rows.get(job.id);
      if (!tr) tr = makeRow(job.id);
      rows.delete(job.id);
      updateRow(tr, job);
      if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null);
    });
    for (const tr of rows.values()) tr.remove();
    $("#jobs-count").textContent = all.length ? `(${list.length}${list.length !== all.length ? " of " + all.length : ""})` : "";
    $("#jobs-empty").hidden = list.length > 0;
    $("#jobs-empty").textContent = all.length ? "No jobs match." : "No jobs yet.";
    $("#jobs-more").hidden = list.length <= state.visible;
  }

  function makeRow(id) {
    const refs = {};
    const tr = el("tr", { "data-job-id": id },
      refs.thumbCell = el("td", { class: "thumb-cell" }),
      el("td", { class: "job-cell" },
        el("button", { type: "button", class: "link job-link job-id", "data-open": id, text: id }),
        refs.kind = el("div", { class: "muted kind" })),
      el("td", { class: "state-cell" }, refs.state = el("span", { class: "state" })),
      el("td", { class: "progress-cell" },
        refs.progress = el("div", { class: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" },
          refs.bar = el("div", { class: "bar" }),
          refs.pctText = el("span", { class: "pct" })),
        refs.stage = el("div", { class: "muted stage" })),
      refs.created = el("td", { class: "muted created" }),
      el("td", { class: "actions" },
        el("button", { type: "button", class: "secondary details-button", "data-open": id, text: "Details" }),
        refs.cancel = el("button", { type: "button", class: "danger cancel", "data-cancel": id, text: "Cancel" })));
    tr._refs = refs;
    return tr;
  }

  function stageText(job, doc) {
    if (job.state === "failed" || job.state === "canceled") {
      const err = (doc && doc.error) || job.error;
      return err ? err.message || err.code : job.state;
    }
    if (job.state === "queued") {
      const pos = state.queue.get(job.id) ?? job.queue_position;
      const parts = [pos ? `#${pos} in queue` : "waiting"];
      if (job.attempt > 0) parts.push(`attempt ${job.attempt + 1}`);
      return parts.join(" · ");
    }
    if (job.state === "submitted") return "sent; waiting for the daemon";
    const parts = [job.stage, job.message];
    if (job.state === "running" && job.eta_seconds != null) parts.push(`~${fmtSeconds(job.eta_seconds)} left`);
    if (job.state === "completed") {
      const v = doc && doc.result && doc.result.video;
      return v ? `${v.width}×${v.height}, ${Number(v.duration).toFixed(1)} s` : "done";
    }
    return parts.filter(Boolean).join(" · ");
  }

  function thumbFile(doc) {
    const files = (doc && doc.result && doc.result.files) || [];
    return files.find((f) => f.name === "thumb.jpg") || files.find((f) => (f.media_type || "").startsWith("image/"));
  }

  function updateRow(tr, job) {
    const r = tr._refs;
    const doc = state.docs.get(job.id);
    tr.dataset.state = job.state;
    tr.classList.toggle("fresh", state.fresh.has(job.id));
    r.kind.textContent = job.kind || "";
    r.state.textContent = job.state;
    r.state.dataset.state = job.state;
    const p = pct(job);
    r.bar.style.width = `${p}%`;
    r.progress.dataset.progress = String(Math.round(p));
    r.progress.setAttribute("aria-valuenow", String(Math.round(p)));
    r.progress.dataset.state = job.state;
    r.pctText.textContent = `${Math.round(p)}%`;
    r.stage.textContent = stageText(job, doc);
    r.created.textContent = fmtTime(job.created_at);
    r.created.title = job.created_at || "";
    r.cancel.hidden = !CANCELABLE.has(job.state);
    if (FINAL.has(job.state) && !doc) wantDoc(job.id);
    const thumb = job.state === "completed" ? thumbFile(doc) : null;
    const src = thumb ? authed(fileUrl(job.id, thumb)) : previewUrl(job);
    const img = r.thumbCell.firstElementChild;
    if (src && (!img || img.dataset.src !== src)) {
      r.thumbCell.replaceChildren(el("img", { class: "thumb", src, "data-src": src, alt: "",
                                              "data-open": job.id, width: "96", height: "54",
                                              on: { error: (e) => { e.target.hidden = true; } } }));
    } else if (!src && img) {
      r.thumbCell.replaceChildren();
    }
  }

  // -- cancel -----------------------------------------------------------------------------------
  async function cancelJob(id, button) {
    if (button) button.disabled = true;
    try {
      const res = await api(jobPath(id), { method: "DELETE" });
      setSubmitStatus(`Cancel of ${id}: ${res.state}`, "ok");
    } catch (exc) {
      report(exc, `cancel ${id}`);
    } finally {
      if (button) button.disabled = false;
      setTimeout(() => refreshJob(id), 300);
    }
  }

  // -- details ----------------------------------------------------------------------------------
  async function openDetails(id) {
    const dialog = $("#details");
    state.details = id;
    state.detailsState = null;
    $("#details-title").textContent = id;
    if (!dialog.open) {
      if (typeof dialog.showModal === "function") dialog.showModal(); else dialog.setAttribute("open", "");
    }
    const cached = state.docs.get(id);
    if (cached && !cached._failed) { renderDetails(cached); return; }  // final: it will not change
    $("#details-body").replaceChildren(el("p", { class: "muted", text: "loading…" }));
    try {
      const doc = await api(jobPath(id));
      if (state.details !== id) return;
      renderDetails(doc);
      upsert(doc);
    } catch (exc) {
      if (state.details !== id) return;
      $("#details-body").replaceChildren(el("p", { class: "error-msg", text: exc.message }));
    }
  }

  function closeDetails() {
    const dialog = $("#details");
    state.details = null;
    for (const m of dialog.querySelectorAll("video, audio")) m.pause();
    $("#details-body").replaceChildren();
    if (dialog.open) {
      if (typeof dialog.close === "function") dialog.close(); else dialog.removeAttribute("open");
    }
  }

  // An event about the job on show: progress in place; a new state redraws (with the result).
  function detailsUpdate(job) {
    if (job.state !== state.detailsState) {
      if (FINAL.has(job.state) && !state.docs.has(job.id)) { openDetails(job.id); return; }
      renderDetails(state.docs.get(job.id) || job);
      return;
    }
    const box = $("#details-progress");
    if (box) {
      const p = pct(job);
      box.querySelector(".bar").style.width = `${p}%`;
      box.dataset.progress = String(Math.round(p));
      box.querySelector(".pct").textContent = `${Math.round(p)}%`;
      $("#details-stage").textContent = stageText(job, null);
    }
    showLivePreview(job);
  }

  // The dialog's live preview of a running job, replaced as new ones are written.
  function showLivePreview(job) {
    const src = previewUrl(job);
    let img = $("#details-preview");
    if (!src) { if (img) img.remove(); return; }
    if (!img) {
      img = el("img", { id: "details-preview", class: "preview live-preview", alt: "live preview",
                        on: { error: (e) => { e.target.hidden = true; }, load: (e) => { e.target.hidden = false; } } });
      $("#details-stage").after(img);
    }
    if (img.dataset.src !== src) {
      img.dataset.src = src;
      img.dataset.step = String(job.preview.step);
      img.src = src;
    }
  }

  function renderDetails(doc) {
    const id = doc.id;
    state.detailsState = doc.state;
    const result = doc.result || {};
    const files = result.files || [];
    const body = [];

    const meta = [
      ["kind", doc.kind], ["state", doc.state], ["device", doc.device], ["host", doc.host], ["model", doc.model],
      ["attempt", doc.attempt ? `${doc.attempt} of ${doc.max_attempts}` : null],
      ["created", fmtTime(doc.created_at)], ["started", fmtTime(doc.started_at)], ["finished", fmtTime(doc.finished_at)],
    ];
    if (result.video) {
      const v = result.video;
      meta.push(["video", `${v.width}×${v.height}, ${v.fps} fps, ${Number(v.duration).toFixed(2)} s, ${v.codec}`]);
    }
    if (result.audio) {
      const a = result.audio;
      meta.push(["audio", [a.codec, a.sample_rate && `${a.sample_rate} Hz`, a.duration && `${Number(a.duration).toFixed(2)} s`].filter(Boolean).join(", ")]);
    }
    const labels = Object.entries(doc.labels || {});
    if (labels.length) meta.push(["labels", labels.map(([k, v]) => `${k}=${v}`).join(", ")]);
    body.push(el("dl", { class: "meta", id: "details-meta" },
      meta.filter(([, v]) => v).map(([k, v]) => [el("dt", { text: k }), el("dd", { text: v, "data-key": k })])));

    if (!FINAL.has(doc.state)) {
      const p = pct(doc);
      body.push(el("div", { id: "details-progress", class: "progress", "data-progress": String(Math.round(p)) },
        el("div", { class: "bar", style: `width:${p}%` }), el("span", { class: "pct", text: `${Math.round(p)}%` })));
      body.push(el("p", { id: "details-stage", class: "muted", text: stageText(doc, null) }));
      if (CANCELABLE.has(doc.state)) {
        body.push(el("p", {}, el("button", { type: "button", class: "danger cancel", "data-cancel": id, text: "Cancel job" })));
      }
    }

    if (doc.error) {
      body.push(el("p", { id: "details-error", class: "error-msg" },
        el("strong", { text: doc.error.code || "error" }), ": ", doc.error.message || ""));
    }

    const thumb = files.find((f) => f.name === "thumb.jpg");
    const videos = files.filter((f) => (f.media_type || "").startsWith("video/"));
    const audios = files.filter((f) => (f.media_type || "").startsWith("audio/"));
    const subtitles = files.filter((f) => f.name.endsWith(".vtt"));
    const video = videos.find((f) => f.name === "video.mp4") || videos[0];
    if (video) {
      body.push(el("video", {
        id: "details-video", class: "player", controls: true, preload: "auto", playsinline: true,
        src: authed(fileUrl(id, video)), poster: thumb ? authed(fileUrl(id, thumb)) : null,
      }, subtitles.map((s, i) => el("track", { kind: "captions", src: authed(fileUrl(id, s)), label: s.name, default: i === 0 }))));
    }
    for (const a of audios) {
      body.push(el("figure", { class: "audio" },
        el("figcaption", { class: "muted", text: a.name }),
        el("audio", { controls: true, preload: "metadata", src: authed(fileUrl(id, a)), "data-file": a.name })));
    }
    const images = files.filter((f) => (f.media_type || "").startsWith("image/") && !(video && f === thumb));
    if (images.length) {
      body.push(el("div", { class: "previews" }, images.map((f) =>
        el("img", { class: "preview", src: authed(fileUrl(id, f)), alt: f.name, "data-file": f.name }))));
    }

    if (files.length) {
      body.push(el("h3", { text: "Files" }));
      body.push(el("ul", { id: "details-files", class: "files" }, files.map((f) =>
        el("li", { "data-file": f.name },
          el("a", { href: authed(fileUrl(id, f)), download: f.name, text: f.name }),
          el("span", { class: "muted", text: ` ${fmtBytes(f.size)} · ${f.media_type || ""}` })))));
    } else if (doc.state === "completed") {
      body.push(el("p", { class: "muted", text: "No result files." }));
    }

    if (doc.job) {
      body.push(el("details", { class: "job-doc" },
        el("summary", { text: "Job document" }),
        el("pre", { class: "mono", text: JSON.stringify(doc.job, null, 2) })));
    }
    $("#details-title").textContent = id;
    $("#details-body").replaceChildren(...body);
    if (!FINAL.has(doc.state)) showLivePreview(doc);
  }

  // -- submitting ---------------------------------------------------------------------------------
  function submitted(res, doc) {
    const id = res.id;
    state.fresh.add(id);
    setTimeout(() => { state.fresh.delete(id); scheduleRender(); }, 8000);
    if (!state.jobs.has(id)) {
      state.jobs.set(id, { id, kind: doc.kind, state: "submitted", progress: 0, stage: null,
                           created_at: null, labels: doc.labels || {}, _seen: performance.now() });
    }
    if (state.filter && !matchesFilter(state.jobs.get(id))) { state.filter = ""; $("#filter-state").value = ""; }
    scheduleRender();
    setSubmitStatus(`Submitted ${id}.`, "ok");
    // The event stream will tell; ask anyway in case the daemon was quicker than the stream.
    setTimeout(() => refreshJob(id), 400);
  }

  async function submitJson(e) {
    e.preventDefault();
    const text = $("#job-json").value;
    let doc;
    try {
      doc = JSON.parse(text);
    } catch (exc) {
      setSubmitStatus(`Not valid JSON: ${exc.message}`, "error");
      return;
    }
    if (!doc || typeof doc !== "object" || Array.isArray(doc)) {
      setSubmitStatus("The job must be a JSON object.", "error");
      return;
    }
    const button = $("#submit-json");
    button.disabled = true;
    setSubmitStatus("Submitting…");
    try {
      submitted(await api("/jobs", { method: "POST", body: text, headers: { "Content-Type": "application/json" } }), doc);
    } catch (exc) {
      setSubmitStatus(`Refused: ${exc.message}`, "error");
    } finally {
      button.disabled = false;
    }
  }

  function kindInputs(kind) {
    const map = (state.info && state.info.kind_inputs) || {};
    return map[kind] || [];
  }

  function guessInput(file, inputs) {
    const type = (file.type || "").split("/")[0];
    const prefer = { image: /image|face/, audio: /audio|music|voice/, video: /video|face/ }[type];
    return (prefer && inputs.find((n) => prefer.test(n))) || inputs[0] || "images";
  }

  function kindChanged() {
    const kind = $("#kind").value;
    const fields = KIND_FIELDS[kind] || ["prompt", "text", "slides"];
    for (const label of document.querySelectorAll("#fields-form [data-field]")) {
      label.hidden = !fields.includes(label.dataset.field);
    }
    const inputs = kindInputs(kind);
    $("#input-names").replaceChildren(...inputs.map((n) => el("option", { value: n })));
    renderFileInputs();
  }

  function renderFileInputs() {
    const inputs = kindInputs($("#kind").value);
    const files = [...$("#files").files];
    $("#file-inputs").replaceChildren(...files.map((f) =>
      el("label", { class: "file-row" },
        el("span", { class: "file-name", text: `${f.name} (${fmtBytes(f.size)}) → input` }),
        el("input", { type: "text", class: "file-input-name", list: "input-names", "data-file": f.name,
                      value: guessInput(f, inputs), "aria-label": `input name for ${f.name}`, required: true }))));
  }

  function buildFieldsJob() {
    const kind = $("#kind").value;
    const doc = { kind };
    let params = {};
    const extra = $("#params-json").value.trim();
    if (extra) {
      try {
        params = JSON.parse(extra);
      } catch (exc) {
        throw new Error(`Other params are not valid JSON: ${exc.message}`);
      }
      if (!params || typeof params !== "object" || Array.isArray(params)) throw new Error("Other params must be a JSON object.");
    }
    const visible = (name) => !$(`#fields-form [data-field="${name}"]`).hidden;
    if (visible("prompt") && $("#prompt").value.trim()) params.prompt = $("#prompt").value.trim();
    if (visible("text") && $("#text").value.trim()) params.text = $("#text").value.trim();
    if (visible("slides")) {
      const slides = $("#slides").value.split("\n").map((s) => s.trim()).filter(Boolean);
      if (slides.length) params.slides = slides;
    }
    if (Object.keys(params).length) doc.params = params;
    const priority = parseInt($("#priority").value, 10);
    if (priority) doc.priority = priority;
    const files = [...$("#files").files];
    if (files.length) {
      const groups = {};
      for (const input of document.querySelectorAll("#file-inputs .file-input-name")) {
        const name = input.value.trim();
        if (!name) throw new Error(`Say which input ${input.dataset.file} is for.`);
        (groups[name] = groups[name] || []).push(input.dataset.file);
      }
      // one file: a plain name (every input takes that); several: a list
      doc.inputs = Object.fromEntries(Object.entries(groups).map(([k, v]) => [k, v.length === 1 ? v[0] : v]));
    }
    return { doc, files };
  }

  async function submitFields(e) {
    e.preventDefault();
    let built;
    try {
      built = buildFieldsJob();
    } catch (exc) {
      setSubmitStatus(exc.message, "error");
      return;
    }
    const { doc, files } = built;
    const button = $("#submit-fields");
    button.disabled = true;
    setSubmitStatus(files.length ? "Uploading…" : "Submitting…");
    try {
      let res;
      if (files.length) {
        const form = new FormData();
        form.append("job", JSON.stringify(doc));
        for (const f of files) form.append("file", f, f.name);
        res = await upload(form, (done) => setSubmitStatus(`Uploading… ${Math.round(done * 100)}%`));
      } else {
        res = await api("/jobs", { method: "POST", body: JSON.stringify(doc), headers: { "Content-Type": "application/json" } });
      }
      submitted(res, doc);
    } catch (exc) {
      setSubmitStatus(`Refused: ${exc.message}`, "error");
    } finally {
      button.disabled = false;
    }
  }

  function showTab(paneId) {
    for (const tab of document.querySelectorAll("[role=tab]")) {
      tab.setAttribute("aria-selected", String(tab.dataset.tab === paneId));
    }
    for (const pane of document.querySelectorAll("[data-pane]")) pane.hidden = pane.id !== paneId;
  }

  // -- wiring -------------------------------------------------------------------------------------
  function init() {
    document.addEventListener("click", (e) => {
      const cancel = e.target.closest("[data-cancel]");
      if (cancel) { cancelJob(cancel.dataset.cancel, cancel); return; }
      const open = e.target.closest("[data-open]");
      if (open) openDetails(open.dataset.open);
    });
    $("#details-close").addEventListener("click", closeDetails);
    $("#details").addEventListener("close", () => { if (state.details) closeDetails(); });
    $("#details").addEventListener("click", (e) => { if (e.target === $("#details")) closeDetails(); }); // backdrop
    $("#error-close").addEventListener("click", hideError);
    $("#json-form").addEventListener("submit", submitJson);
    $("#fields-form").addEventListener("submit", submitFields);
    $("#kind").addEventListener("change", kindChanged);
    $("#files").addEventListener("change", renderFileInputs);
    for (const tab of document.querySelectorAll("[role=tab]")) tab.addEventListener("click", () => showTab(tab.dataset.tab));
    $("#filter-state").addEventListener("change", (e) => { state.filter = e.target.value; state.visible = PAGE; renderJobs(); });
    $("#jobs-more").addEventListener("click", () => { state.visible += PAGE; renderJobs(); });
    $("#pause-toggle").addEventListener("click", (e) => togglePause(e.currentTarget));
    $("#auth-form").addEventListener("submit", (e) => {
      e.preventDefault();
      writeToken($("#token").value.trim());
      $("#token").value = "";
      restart();
    });
    $("#token-forget").addEventListener("click", () => { writeToken(""); $("#token-forget").hidden = true; restart(); });
    document.addEventListener("visibilitychange", () => { if (!document.hidden) pollQueue(); });

    setMode("connecting");
    loadInfo();
    loadJobs();
    pollQueue();
    pollHealth();
    setInterval(pollHealth, 10000);
    setInterval(() => { if (state.mode === "sse") refreshActive(); }, SAFETY_REFRESH_MS);
    setInterval(() => scheduleRender(), 60000);  // dates
    connectEvents();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
