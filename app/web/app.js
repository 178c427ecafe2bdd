// Quire's web page: upload, follow the job live, download. Plain JavaScript, no build step.
//
// The live list reads the server-sent events with fetch() and a stream reader, not
// EventSource, because EventSource cannot send the Authorization header an API key needs.
// If the stream is missing or breaks, the page polls the status document instead.
"use strict";

const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED"]);
const KEY_STORAGE = "quire.apiKey";
const POLL_MS = 1000;
// A 429 without a usable Retry-After waits this long before the page submits again.
const QUOTA_WAIT_S = 15;

const $ = (id) => document.getElementById(id);
// Relative to the page, so the page also works behind a proxy that serves Quire under a path.
const api = (path) => new URL(`api/v1/${path}`, document.baseURI).href;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function apiKey() {
  return $("api-key").value.trim();
}

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function humanBytes(count) {
  const units = ["B", "kB", "MB", "GB"];
  let unit = 0;
  while (count >= 1000 && unit < units.length - 1) {
    count /= 1000;
    unit += 1;
  }
  return unit === 0 ? `${count} B` : `${count.toFixed(1)} ${units[unit]}`;
}

// The message of the standard error body {"error": {"status", "code", "message"}}, or "".
function serverMessage(text) {
  try {
    return JSON.parse(text).error.message || "";
  } catch (_) {
    return ""; // not the standard body
  }
}

function errorMessage(status, text) {
  const message = serverMessage(text);
  return message ? `${status}: ${message}` : `The server answered ${status}.`;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function setBar(bar, percent) {
  const value = Math.max(0, Math.min(100, percent));
  bar.querySelector(".fill").style.width = `${value}%`;
  bar.setAttribute("aria-valuenow", String(Math.round(value * 10) / 10));
  bar.classList.toggle("done", value >= 100);
}

async function getJson(path) {
  const response = await fetch(api(path), { headers: authHeaders() });
  const text = await response.text();
  if (!response.ok) throw new Error(errorMessage(response.status, text));
  return JSON.parse(text);
}

// -- choosing and uploading ------------------------------------------------------------------

// The documents the service converts (app/zipinput.py DOCUMENT_SUFFIXES); what each really
// is, the worker decides from its bytes.
const DOCUMENT_SUFFIXES = [".docx", ".docm", ".doc", ".rtf", ".odt"];

// One zip goes in the field "file"; documents each go in a repeated field "files".
function buildForm(chosen) {
  const files = Array.from(chosen);
  const zips = files.filter((f) => f.name.toLowerCase().endsWith(".zip"));
  const docx = files.filter((f) => DOCUMENT_SUFFIXES.some((s) => f.name.toLowerCase().endsWith(s)));
  if (!files.length) return null;
  if (zips.length > 1 || (zips.length === 1 && files.length > 1)) {
    throw new Error("Choose one zip, or documents, not both.");
  }
  if (!zips.length && docx.length !== files.length) {
    throw new Error("Only a .zip or .docx, .doc, .rtf and .odt files can be converted.");
  }
  const form = new FormData();
  const pdfA = $("pdf-a").value;
  if (pdfA) form.append("pdf_a", pdfA);
  if ($("tagged-pdf").checked) form.append("tagged_pdf", "true");
  if ($("strict-fonts").checked) form.append("strict_fonts", "true");
  if (zips.length) form.append("file", zips[0], zips[0].name);
  else docx.forEach((f) => form.append("files", f, f.name));
  const label = zips.length ? zips[0].name : `${docx.length} document${docx.length > 1 ? "s" : ""}`;
  return { form, label };
}

// XMLHttpRequest rather than fetch(): only it reports upload progress.
function upload(form, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", api("jobs"));
    for (const [name, value] of Object.entries(authHeaders())) {
      request.setRequestHeader(name, value);
    }
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    };
    request.onload = () => {
      if (request.status === 202) {
        resolve(JSON.parse(request.responseText));
        return;
      }
      const error = new Error(errorMessage(request.status, request.responseText));
      error.status = request.status;
      if (request.status === 429) {
        // A quota of this key (or of the server, without keys) is full: say why, and when.
        error.reason = serverMessage(request.responseText) || error.message;
        const seconds = Number.parseInt(request.getResponseHeader("Retry-After") || "", 10);
        error.retryAfter = Number.isFinite(seconds) && seconds > 0 ? seconds : QUOTA_WAIT_S;
      }
      reject(error);
    };
    request.onerror = () => reject(new Error("The upload failed: the server could not be reached."));
    request.send(form);
  });
}

// Shows why the upload waits and counts down; resolves true to submit again (the countdown
// ended, or "Try now"), false when the person gives up ("Cancel").
function waitForQuota(reason, seconds) {
  const box = $("quota-wait");
  $("quota-message").textContent = reason;
  box.hidden = false;
  document.body.dataset.quotaRefusals = String(Number(document.body.dataset.quotaRefusals || 0) + 1);
  return new Promise((resolve) => {
    let left = seconds;
    const show = () => {
      $("quota-countdown").textContent = `Trying again in ${left} s…`;
    };
    const done = (again) => {
      clearInterval(timer);
      $("quota-now").onclick = null;
      $("quota-stop").onclick = null;
      box.hidden = true;
      resolve(again);
    };
    const timer = setInterval(() => {
      left -= 1;
      if (left <= 0) done(true);
      else show();
    }, 1000);
    show();
    $("quota-now").onclick = () => done(true);
    $("quota-stop").onclick = () => done(false);
  });
}

// Submits the form; while a quota refuses it (429), waits as the server says and submits again.
// Resolves to the created job, or null when the person stopped waiting.
async function submitWhenAllowed(form, onProgress) {
  for (;;) {
    try {
      return await upload(form, onProgress);
    } catch (error) {
      if (error.status !== 429) throw error;
      $("upload-verb").textContent = "Waiting to upload";
      if (!(await waitForQuota(error.reason, error.retryAfter))) return null;
      $("upload-verb").textContent = "Uploading";
    }
  }
}

async function start(chosen) {
  showError("");
  let built;
  try {
    built = buildForm(chosen);
  } catch (error) {
    showError(error.message);
    return;
  }
  if (!built) return;
  $("pick").hidden = true;
  $("upload").hidden = false;
  $("upload-verb").textContent = "Uploading";
  $("upload-name").textContent = built.label;
  const started = performance.now();
  let total = 0;
  try {
    const created = await submitWhenAllowed(built.form, (loaded, size) => {
      total = size;
      setBar($("upload-bar"), (100 * loaded) / size);
      $("upload-text").textContent = `${humanBytes(loaded)} of ${humanBytes(size)}`;
    });
    if (!created) {
      reset();
      return;
    }
    const seconds = (performance.now() - started) / 1000;
    setBar($("upload-bar"), 100);
    $("upload-verb").textContent = "Uploaded";
    $("upload-text").textContent = `Uploaded ${humanBytes(total)} in ${seconds.toFixed(1)} s`;
    await followJob(created.job_id);
  } catch (error) {
    showError(error.message);
    $("upload").hidden = true;
    $("pick").hidden = false;
    $("file-input").value = ""; // so choosing the same files again is a change
  }
}

// -- the job ---------------------------------------------------------------------------------

const rows = new Map(); // file_id -> <tr>

function statusBadge(status) {
  const badge = document.createElement("span");
  badge.className = "status";
  badge.dataset.status = status;
  badge.textContent = status;
  return badge;
}

// Names and messages are data from the upload: always textContent, never HTML.
function setRow(file) {
  let row = rows.get(file.file_id);
  if (!row) {
    row = document.createElement("tr");
    row.dataset.fileId = file.file_id;
    for (const kind of ["name", "state", "message"]) {
      const cell = document.createElement("td");
      cell.className = kind;
      row.append(cell);
    }
    rows.set(file.file_id, row);
    $("files").tBodies[0].append(row);
  }
  row.className = file.status;
  if (file.download_url) {
    // A converted file's own PDF, by its presigned link: open one without the whole archive.
    const link = document.createElement("a");
    link.href = file.download_url;
    link.target = "_blank";
    link.rel = "noopener";
    link.textContent = file.filename;
    row.cells[0].replaceChildren(link);
  } else if (!row.cells[0].querySelector("a")) {
    row.cells[0].textContent = file.filename;
  }
  row.cells[1].replaceChildren(statusBadge(file.status));
  row.cells[2].textContent = file.error_message || fontsNote(file.fonts);
}

// A converted file's font report in a few words: "Calibri → Carlito · missing: Brand Sans".
function fontsNote(fonts) {
  if (!fonts) return "";
  const parts = Object.entries(fonts.substituted || {}).map(
    ([requested, used]) => `${requested} → ${used.used}${used.metric_compatible ? "" : " (layout may differ)"}`,
  );
  if (fonts.missing && fonts.missing.length) parts.push(`missing: ${fonts.missing.join(", ")}`);
  return parts.join(" · ");
}

// The job's font counts (the status document's fonts, the job event's): hidden when none.
function setFonts(counts) {
  const line = $("job-fonts");
  const substituted = (counts && counts.files_with_substitutions) || 0;
  const missing = (counts && counts.files_with_missing_fonts) || 0;
  line.hidden = !substituted && !missing;
  line.textContent = `Fonts: ${substituted} file${substituted === 1 ? "" : "s"} with substituted fonts · ${missing} with missing fonts`;
}

function setProgress(progress) {
  const finished = progress.completed + progress.failed + (progress.cancelled || 0);
  const percent = progress.total ? (100 * finished) / progress.total : 100;
  setBar($("overall-bar"), percent);
  let text = `${finished} of ${progress.total} files finished · ${progress.completed} converted · ${progress.failed} failed`;
  if (progress.cancelled) text += ` · ${progress.cancelled} cancelled`;
  $("overall-text").textContent = text;
  // A file of the job started: nothing is ahead of it any more (the events carry no place).
  if (progress.pending < progress.total) $("job-place").hidden = true;
}

// Where a job none of whose files has started stands: files_ahead and estimated_start of the
// status document, both estimates.
function setPlace(job) {
  const place = $("job-place");
  if (!job.files_ahead) {
    place.hidden = true;
    return;
  }
  let text = `${job.files_ahead} conversion${job.files_ahead === 1 ? "" : "s"} ahead`;
  if (job.estimated_start) {
    const seconds = Math.round((Date.parse(job.estimated_start) - Date.now()) / 1000);
    text += `, starts in about ${Math.max(1, seconds)} s`;
  }
  place.textContent = text;
  place.hidden = false;
}

function setJobStatus(status) {
  const badge = $("job-status");
  badge.dataset.status = status;
  badge.textContent = status;
}

function render(job) {
  setJobStatus(job.status);
  setProgress(job.progress);
  setFonts(job.fonts);
  setPlace(job);
  const fragment = document.createDocumentFragment();
  for (const file of job.files) {
    const isNew = !rows.has(file.file_id);
    setRow(file);
    if (isNew) fragment.append(rows.get(file.file_id));
  }
  $("files").tBodies[0].append(fragment);
}

// Reads the event stream; true once the job event came, false if the stream ended before.
async function streamEvents(jobId) {
  const response = await fetch(api(`jobs/${jobId}/events`), { headers: authHeaders() });
  if (!response.ok || !response.body) throw new Error(`event stream answered ${response.status}`);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let name = "message";
  let data = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += value;
    const lines = buffer.split("\n");
    buffer = lines.pop();
    for (const raw of lines) {
      const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
      if (line === "") {
        if (data) {
          const payload = JSON.parse(data);
          if (name === "file") setRow(payload);
          else if (name === "progress") setProgress(payload);
          else if (name === "job") {
            setProgress(payload.progress);
            setFonts(payload.fonts);
            setJobStatus(payload.status);
            reader.cancel();
            return true;
          }
        }
        name = "message";
        data = "";
      } else if (line.startsWith(":")) {
        // a heartbeat comment
      } else if (line.startsWith("event:")) {
        name = line.slice(6).trim();
      } else if (line.startsWith("data:")) {
        data += (data ? "\n" : "") + line.slice(5).trimStart();
      }
    }
  }
}

async function followJob(jobId) {
  rows.clear();
  $("files").tBodies[0].replaceChildren();
  $("job-id").textContent = jobId;
  $("job").hidden = false;
  render(await getJson(`jobs/${jobId}`));
  let ended = false;
  // How the page learnt the outcome ("events" or "polling"): shown to tests and to curious
  // people in the inspector, nowhere else.
  document.body.dataset.followedBy = "events";
  try {
    ended = await streamEvents(jobId);
  } catch (_) {
    ended = false; // no stream, or it broke: poll below
  }
  if (!ended) document.body.dataset.followedBy = "polling";
  let job = await getJson(`jobs/${jobId}`);
  while (!ended && !TERMINAL.has(job.status)) {
    render(job);
    await sleep(POLL_MS);
    job = await getJson(`jobs/${jobId}`);
  }
  render(job);
  finish(job);
}

function finish(job) {
  $("again").hidden = false;
  if (job.error_message) {
    $("job-error").textContent = job.error_message;
    $("job-error").hidden = false;
  }
  if (job.status !== "COMPLETED") return;
  const link = $("download");
  const size = job.result_bytes ? ` (${humanBytes(job.result_bytes)})` : "";
  link.textContent = `Download ${job.progress.completed} PDFs${size}`;
  link.download = `quire-${job.job_id}.zip`;
  link.href = job.download_url || api(`jobs/${job.job_id}/download`);
  link.hidden = false;
}

// A plain link cannot send the API key: with a key, fetch the archive through the API
// (same origin, no redirect to the store) and save it from memory.
async function downloadWithKey(event) {
  if (!apiKey()) return; // the link's own navigation follows the redirect
  event.preventDefault();
  const link = event.currentTarget;
  try {
    const response = await fetch(`${link.href}?redirect=false`, { headers: authHeaders() });
    if (!response.ok) throw new Error(errorMessage(response.status, await response.text()));
    const url = URL.createObjectURL(await response.blob());
    const save = document.createElement("a");
    save.href = url;
    save.download = link.download;
    save.click();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (error) {
    showError(error.message);
  }
}

function reset() {
  rows.clear();
  $("files").tBodies[0].replaceChildren();
  for (const id of ["job", "upload", "download", "again", "job-error"]) $(id).hidden = true;
  setBar($("upload-bar"), 0);
  setBar($("overall-bar"), 0);
  $("file-input").value = "";
  $("pick").hidden = false;
  showError("");
}

// -- wiring ----------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  const drop = $("drop");
  const keyInput = $("api-key");
  // sessionStorage: the key lasts as long as this tab, not on the disk for good. Releases
  // before issue 12 kept it in localStorage: forget that copy.
  localStorage.removeItem(KEY_STORAGE);
  keyInput.value = sessionStorage.getItem(KEY_STORAGE) || "";
  keyInput.addEventListener("input", () => {
    if (apiKey()) sessionStorage.setItem(KEY_STORAGE, apiKey());
    else sessionStorage.removeItem(KEY_STORAGE);
  });
  $("file-input").addEventListener("change", (event) => start(event.target.files));
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    start(event.dataTransfer.files);
  });
  $("download").addEventListener("click", downloadWithKey);
  $("again").addEventListener("click", reset);
  $("only-failed").addEventListener("change", (event) => {
    $("files").classList.toggle("only-failed", event.target.checked);
  });
});
