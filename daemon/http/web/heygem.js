// The HeyGem page: posts the form to /api/generate and polls /api/status/<task_id>.
// Served as its own file: the page's Content-Security-Policy allows only own-origin scripts.
"use strict";

const $ = (id) => document.getElementById(id);
let polling = null;

async function answer(response) {
  let body = {};
  try { body = await response.json(); } catch (e) { body = {error: `HTTP ${response.status}`}; }
  if (!response.ok || body.success === false) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function showError(message) {
  $("task").hidden = false;
  $("task-error").hidden = false;
  $("task-error").textContent = message;
}

function showNotes(items) {
  const list = $("task-notes-list");
  list.replaceChildren(...items.map((text) => { const li = document.createElement("li"); li.textContent = text; return li; }));
  $("task-notes").hidden = items.length === 0;
}

async function poll(taskId) {
  try {
    const st = await answer(await fetch(`/api/status/${encodeURIComponent(taskId)}`, {cache: "no-store"}));
    $("task-status").textContent = st.status;
    $("task-message").textContent = st.message || "";
    $("task-progress").value = st.progress || 0;
    showNotes([...(st.adjusted || []), ...(st.ignored || [])]);
    if (st.status === "failed") {
      showError(st.error || "failed");
    } else if (st.status === "completed" && st.result) {
      $("task-video").src = st.result.video_url;
      $("task-download").href = st.result.download_url;
      const facts = [];
      if (st.result.duration) facts.push(`${Number(st.result.duration).toFixed(1)} s`);
      if (st.result.size) facts.push(`${(st.result.size / 1048576).toFixed(2)} MiB`);
      if (st.result.lipsync) facts.push(`lip sync: ${st.result.lipsync}`);
      $("task-facts").textContent = facts.join(" · ");
      $("task-result").hidden = false;
    } else {
      polling = setTimeout(() => poll(taskId), 1000);
      return;
    }
  } catch (e) {
    showError(e.message);
    polling = setTimeout(() => poll(taskId), 3000);
    return;
  }
  $("submit").disabled = false;
}

async function submit(event) {
  event.preventDefault();
  clearTimeout(polling);
  $("submit").disabled = true;
  $("task-error").hidden = true;
  $("task-result").hidden = true;
  $("task-notes").hidden = true;
  const form = new FormData();
  form.append("text", $("text").value);
  if ($("video").files.length) form.append("video", $("video").files[0]);
  try {
    const started = await answer(await fetch("/api/generate", {method: "POST", body: form}));
    $("task").hidden = false;
    $("task-id").textContent = started.task_id;
    $("task-status").textContent = "queued";
    $("task-progress").value = 0;
    poll(started.task_id);
  } catch (e) {
    showError(e.message);
    $("submit").disabled = false;
  }
}

async function showGpus() {
  try {
    const q = await answer(await fetch("/api/queue", {cache: "no-store"}));
    const devices = Object.entries(q.gpus).map(([key, g]) => `${key}: ${g.device}${g.busy ? " (busy)" : ""}`);
    $("gpus").textContent = `devices ${devices.join(", ") || "none"}; ${q.queue_size} queued.`;
  } catch (e) {
    $("gpus").textContent = "";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("generate").addEventListener("submit", submit);
  showGpus();
  setInterval(showGpus, 5000);
});
