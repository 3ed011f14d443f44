// The page: a form that submits jobs and a gallery that follows the account's events live.
// Plain ES module, no dependencies. Events come from GET /events read with fetch (not EventSource)
// so the API key travels in the Authorization header, never in a URL.

const KEY_STORAGE = "generation-jobs.api-key";
const STATUS_WORDS = {
  pending: "Queued",
  processing: "Generating",
  completed: "Done",
  failed: "Failed",
  canceled: "Canceled",
};
const FINISHED = new Set(["completed", "failed", "canceled"]);

import { createChat } from "./chat.js";

const $ = (selector) => document.querySelector(selector);
const form = $("#new-job");
const list = $("#jobs");
const template = $("#job-template");

const state = {
  jobs: new Map(), // jobId -> latest job seen
  cards: new Map(), // jobId -> <li>
  deleted: new Set(), // jobs deleted here: a replayed event must not bring them back
  listedAt: Date.now(), // server time of the first listing; older unknown jobs belong to later pages
  next: null, // URL of the next page (Link: rel="next")
  lastEventId: null,
};

// ---------------------------------------------------------------- HTTP

class ApiError extends Error {
  constructor(status, problem) {
    super(problemText(status, problem));
    this.status = status;
    this.problem = problem;
  }
}

function problemText(status, problem) {
  if (problem && Array.isArray(problem.errors) && problem.errors.length) {
    return problem.errors.map((e) => (e.field && e.field !== "body" ? `${e.field}: ${e.message}` : e.message)).join("; ");
  }
  if (problem && (problem.detail || problem.title)) return problem.detail || problem.title;
  return `The server answered ${status}.`;
}

async function readProblem(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

let keyPrompt = null; // one dialog for every request that met a 401 at the same time
let keySaved = false;

function askForKey(reason) {
  if (!keyPrompt) {
    keyPrompt = new Promise((resolve) => {
      const dialog = $("#key-dialog");
      $("#key-reason").textContent = reason;
      $("#key-forget").hidden = true;
      $("#api-key").value = "";
      dialog.addEventListener(
        "close",
        () => {
          keyPrompt = null;
          resolve();
        },
        { once: true },
      );
      dialog.showModal();
    });
  }
  return keyPrompt;
}

async function api(path, { method = "GET", body, headers = {}, signal } = {}) {
  for (;;) {
    const key = localStorage.getItem(KEY_STORAGE);
    const sent = { Accept: "application/json", ...headers };
    if (key) sent.Authorization = `Bearer ${key}`;
    if (body !== undefined) sent["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers: sent,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    });
    if (response.status === 401) {
      await askForKey(
        key
          ? "That key was not accepted. Check it and paste it again."
          : "Paste the key you were given. It stays in this browser only.",
      );
      continue;
    }
    if (!response.ok) throw new ApiError(response.status, await readProblem(response));
    return response;
  }
}

function nextLink(response) {
  const link = response.headers.get("Link") || "";
  const match = link.match(/<([^>]+)>\s*;\s*rel="?next"?/);
  return match ? match[1] : null;
}

// ---------------------------------------------------------------- server-sent events

// A small reader of the text/event-stream format (WHATWG HTML, "Server-sent events").
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  let type = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop(); // an unfinished line waits for the next chunk
    for (const line of lines) {
      if (line === "") {
        if (data.length) onEvent({ type: type || "message", data: data.join("\n") });
        data = [];
        type = "";
        continue;
      }
      if (line.startsWith(":")) continue; // keepalive comment
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "event") type = value;
      else if (field === "id" && !value.includes("\0")) state.lastEventId = value;
      else if (field === "retry" && /^\d+$/.test(value)) reconnectDelay = Number(value);
    }
  }
}

let reconnectDelay = 1000;

function setConnection(which, text, title = "") {
  const element = $("#connection");
  element.dataset.state = which;
  element.title = title;
  element.querySelector(".connection-text").textContent = text;
}

async function followEvents() {
  let delay = reconnectDelay;
  for (;;) {
    try {
      const headers = { Accept: "text/event-stream" };
      // Resume where the last connection stopped: the server replays exactly what was missed.
      if (state.lastEventId !== null) headers["Last-Event-ID"] = state.lastEventId;
      const response = await api("/events", { headers });
      setConnection("live", "Live");
      delay = reconnectDelay;
      await readEvents(response.body, onServerEvent);
    } catch (error) {
      if (error instanceof ApiError && error.status !== 503 && error.status < 500) {
        setConnection("offline", "Not live", `Live updates are unavailable: ${error.message}`);
        console.warn("GET /events:", error.message);
        return;
      }
    }
    setConnection("connecting", "Reconnecting…");
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 15000);
  }
}

function onServerEvent(message) {
  let event;
  try {
    event = JSON.parse(message.data);
  } catch {
    return;
  }
  event.type = event.type || message.type;
  chat.onEvent(event);
  if (!event.type.startsWith("job.")) return;
  const job = event.data;
  if (!job || !job.jobId) return;
  upsert(job, { completed: job.completedOutputs, total: job.totalOutputs, fromEvent: true });
}

// ---------------------------------------------------------------- jobs

function upsert(job, { completed, total, fromEvent = false } = {}) {
  if (state.deleted.has(job.jobId)) return;
  const known = state.jobs.get(job.jobId);
  // Events replay from the start of the stream: an older snapshot than the one shown changes nothing.
  if (known && Date.parse(job.updatedAt) < Date.parse(known.updatedAt)) return;
  // Unknown jobs from events are new ones, unless they are older than the first listing (later pages).
  if (!known && fromEvent && Date.parse(job.createdAt) < state.listedAt - 2000) return;
  const progress = {
    completed: completed ?? outputsOf(job).length,
    total: total ?? (job.kind === "video" ? 1 : job.numImages),
  };
  state.jobs.set(job.jobId, job);
  render(job, progress);
  if (known && known.status !== job.status && FINISHED.has(job.status)) {
    announce(`${titleOf(job)}: ${STATUS_WORDS[job.status].toLowerCase()}.`);
  }
  updateCount();
}

function outputsOf(job) {
  if (Array.isArray(job.outputs)) {
    return job.outputs.map((o) => ({ url: o.url, type: o.contentType || "", width: o.width, height: o.height }));
  }
  return (job.imageUrls || []).map((url) => ({ url, type: "image/png" }));
}

function titleOf(job) {
  return job.prompt ? `“${job.prompt.length > 60 ? `${job.prompt.slice(0, 57)}…` : job.prompt}”` : "Untitled job";
}

function placeCard(job, card) {
  // Newest first: the card goes before the first one that was created earlier.
  const created = Date.parse(job.createdAt);
  for (const other of list.children) {
    const otherJob = state.jobs.get(other.dataset.jobId);
    if (otherJob && Date.parse(otherJob.createdAt) < created) {
      list.insertBefore(card, other);
      return;
    }
  }
  list.append(card);
}

function render(job, progress) {
  let card = state.cards.get(job.jobId);
  if (!card) {
    card = template.content.firstElementChild.cloneNode(true);
    card.dataset.jobId = job.jobId;
    if (state.cards.size) card.classList.add("is-new");
    card.querySelector(".cancel").addEventListener("click", () => cancelJob(job.jobId));
    card.querySelector(".delete").addEventListener("click", () => deleteJob(job.jobId));
    const heading = card.querySelector(".prompt");
    heading.id = `job-${job.jobId}`;
    card.querySelector("article").setAttribute("aria-labelledby", heading.id);
    state.cards.set(job.jobId, card);
    placeCard(job, card);
  }
  card.dataset.status = job.status;

  const heading = card.querySelector(".prompt");
  heading.textContent = job.prompt || (job.animal ? `A surprise ${job.animal}` : "A surprise animal");
  heading.classList.toggle("untitled", !job.prompt);

  const status = card.querySelector(".status");
  status.textContent = STATUS_WORDS[job.status] || job.status;

  const when = card.querySelector(".when");
  when.dateTime = job.createdAt;
  when.textContent = formatTime(job.createdAt);

  const what = job.kind === "video" ? `video${job.durationSeconds ? `, ${job.durationSeconds} s` : ""}` : plural(job.numImages, "image");
  const meta = [what, job.provider + (job.model ? ` · ${job.model}` : "")];
  if (job.attempts > 1) meta.push(`attempt ${job.attempts}`);
  card.querySelector(".meta").textContent = meta.join(" · ");

  renderProgress(card, job, progress);
  renderMedia(card, job, progress);

  const error = card.querySelector(".error");
  if (job.error && job.status !== "completed") {
    error.replaceChildren(
      job.status === "pending" ? "Will retry: " : "",
      job.error.message || "The job failed.",
      " ",
      Object.assign(document.createElement("code"), { textContent: `(${job.error.code})` }),
    );
    error.hidden = false;
  } else {
    error.hidden = true;
  }

  const cancel = card.querySelector(".cancel");
  cancel.hidden = FINISHED.has(job.status);
  cancel.setAttribute("aria-label", `Cancel ${titleOf(job)}`);
  card.querySelector(".delete").setAttribute("aria-label", `Delete ${titleOf(job)}`);
}

function renderProgress(card, job, { completed, total }) {
  const bar = card.querySelector("progress");
  const text = card.querySelector(".progress-text");
  bar.max = Math.max(total, 1);
  bar.value = Math.min(completed, total);
  const noun = job.kind === "video" ? "video" : "image";
  let words;
  if (job.status === "pending") {
    words = job.nextAttemptAt ? `Retrying at ${formatTime(job.nextAttemptAt)}` : "Waiting for a worker";
  } else if (job.status === "processing") {
    words = job.kind === "video" ? "Rendering the video…" : `${completed} of ${plural(total, noun)}`;
  } else if (job.status === "completed") {
    const took = job.startedAt && job.completedAt ? (Date.parse(job.completedAt) - Date.parse(job.startedAt)) / 1000 : null;
    words = took === null ? "Finished" : `Finished in ${took < 10 ? took.toFixed(1) : Math.round(took)} s`;
  } else if (job.status === "canceled") {
    words = "Canceled";
  } else {
    words = completed ? `${completed} of ${plural(total, noun)} made before it failed` : "";
  }
  text.textContent = words;
  bar.setAttribute("aria-label", `Progress of ${titleOf(job)}`);
  bar.setAttribute("aria-valuetext", `${completed} of ${total}`);
}

function renderMedia(card, job, { total }) {
  const media = card.querySelector(".media");
  const outputs = outputsOf(job);
  const slots = FINISHED.has(job.status) ? outputs.length : Math.max(total, outputs.length);
  const cols = Math.ceil(Math.sqrt(Math.max(slots, 1)));
  media.dataset.count = String(slots);
  media.style.setProperty("--cols", String(cols));
  media.style.setProperty("--rows", String(Math.ceil(Math.max(slots, 1) / cols)));

  const note = media.querySelector(".media-note");
  media.classList.toggle("nothing", !slots);
  if (!slots) {
    const words = { failed: "Nothing was made.", canceled: "Canceled: nothing was kept." }[job.status];
    media.replaceChildren(Object.assign(document.createElement("p"), { className: "media-note", textContent: words || "" }));
    return;
  }
  if (note) note.remove();

  while (media.children.length > slots) media.lastElementChild.remove();
  for (let index = 0; index < slots; index++) {
    let slot = media.children[index];
    if (!slot) {
      slot = document.createElement("div");
      slot.className = "slot";
      media.append(slot);
    }
    const output = outputs[index];
    if (!output) {
      if (!slot.classList.contains("waiting")) {
        slot.replaceChildren();
        slot.classList.add("waiting");
        slot.setAttribute("role", "img");
        slot.setAttribute("aria-label", `${job.kind === "video" ? "Video" : `Image ${index + 1}`} on its way`);
      }
      continue;
    }
    // Signed URLs change with every answer; reload only when the file itself is another one.
    if (slot.dataset.path === pathOf(output.url)) continue;
    slot.classList.remove("waiting");
    slot.removeAttribute("role");
    slot.removeAttribute("aria-label");
    slot.dataset.path = pathOf(output.url);
    const label = job.kind === "video" ? `Video: ${titleOf(job)}` : `${titleOf(job)}, image ${index + 1} of ${slots}`;
    slot.replaceChildren(mediaContent(output, label));
  }
}

// An output as the page shows it: a video that plays, or a picture that enlarges when pressed.
function mediaContent(output, label) {
  const type = output.contentType || output.type || "";
  if (type.startsWith("video/")) {
    const video = Object.assign(document.createElement("video"), {
      src: output.url,
      controls: true,
      loop: true,
      muted: true,
      autoplay: true,
      playsInline: true,
      preload: "metadata",
    });
    video.setAttribute("aria-label", label);
    return video;
  }
  const button = document.createElement("button");
  button.type = "button";
  button.setAttribute("aria-label", `Enlarge ${label}`);
  const image = Object.assign(document.createElement("img"), { src: output.url, alt: label, decoding: "async" });
  if (output.width && output.height) Object.assign(image, { width: output.width, height: output.height });
  button.append(image);
  button.addEventListener("click", () => openViewer(output.url, label));
  return button;
}

function mediaSlot(output, label) {
  const slot = document.createElement("div");
  slot.className = "slot";
  if (output.width && output.height) slot.style.aspectRatio = `${output.width} / ${output.height}`;
  slot.append(mediaContent(output, label));
  return slot;
}

function pathOf(url) {
  try {
    return new URL(url, location.href).pathname;
  } catch {
    return url;
  }
}

function plural(n, noun) {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const dateFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "numeric", minute: "2-digit" });

function formatTime(iso) {
  const date = new Date(iso);
  return date.toDateString() === new Date().toDateString() ? timeFormat.format(date) : dateFormat.format(date);
}

function updateCount() {
  const n = state.cards.size;
  $("#empty").hidden = n > 0;
  $("#job-count").textContent = n ? `${plural(n, "job")}${state.next ? " shown" : ""}` : "";
}

function announce(text) {
  $("#announcer").textContent = text;
}

function removeCard(jobId) {
  state.deleted.add(jobId);
  state.jobs.delete(jobId);
  state.cards.get(jobId)?.remove();
  state.cards.delete(jobId);
  updateCount();
}

function showCardError(jobId, message) {
  const card = state.cards.get(jobId);
  if (!card) return;
  const error = card.querySelector(".error");
  error.textContent = message;
  error.hidden = false;
}

async function cancelJob(jobId) {
  const button = state.cards.get(jobId)?.querySelector(".cancel");
  if (button) button.disabled = true;
  try {
    const response = await api(`/generations/${jobId}/cancel`, { method: "POST" });
    upsert(await response.json());
  } catch (error) {
    showCardError(jobId, `Could not cancel: ${error.message}`);
  } finally {
    if (button) button.disabled = false;
  }
}

async function deleteJob(jobId) {
  const card = state.cards.get(jobId);
  const button = card?.querySelector(".delete");
  if (button) button.disabled = true;
  try {
    await api(`/generations/${jobId}`, { method: "DELETE" });
    const job = state.jobs.get(jobId);
    removeCard(jobId);
    announce(`${job ? titleOf(job) : "The job"} was deleted.`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      removeCard(jobId);
      return;
    }
    showCardError(jobId, `Could not delete: ${error.message}`);
    if (button) button.disabled = false;
  }
}

async function loadJobs(url) {
  const response = await api(url);
  const first = url === "/generations";
  if (first) {
    const date = Date.parse(response.headers.get("Date") || "");
    state.listedAt = Number.isNaN(date) ? Date.now() : date;
  }
  state.next = nextLink(response);
  for (const job of await response.json()) upsert(job);
  $("#more").hidden = !state.next;
  updateCount();
}

// ---------------------------------------------------------------- the form

function syncKind() {
  const kind = form.elements.kind.value;
  for (const field of form.querySelectorAll("[data-for]")) {
    const on = field.dataset.for === kind;
    field.hidden = !on;
    for (const control of field.querySelectorAll("input, select")) control.disabled = !on;
  }
}

async function submitJob(event) {
  event.preventDefault();
  const error = $("#form-error");
  error.hidden = true;
  const values = new FormData(form);
  const body = {};
  const prompt = String(values.get("prompt") || "").trim();
  if (prompt) body.prompt = prompt;
  if (values.get("provider")) body.provider = values.get("provider");
  if (values.get("kind") === "video") {
    // An image job is the default; only a video names its kind.
    body.kind = "video";
    body.durationSeconds = Number(values.get("durationSeconds"));
    body.aspectRatio = values.get("aspectRatio");
  } else {
    body.numImages = Number(values.get("numImages"));
  }
  const button = $("#submit");
  button.disabled = true;
  button.textContent = "Sending…";
  try {
    const response = await api("/generations", { method: "POST", body });
    upsert(await response.json());
  } catch (failure) {
    error.textContent = failure instanceof ApiError ? failure.message : "The server could not be reached. Try again.";
    error.hidden = false;
  } finally {
    button.disabled = false;
    button.textContent = "Generate";
  }
}

async function loadProviders() {
  const select = form.elements.provider;
  try {
    const providers = await (await api("/providers")).json();
    const options = providers.map((p) => {
      const option = new Option(p.default ? `${p.name} (default)` : p.name, p.name);
      option.dataset.kinds = (p.kinds || ["image"]).join(" ");
      return option;
    });
    select.replaceChildren(...options);
  } catch (error) {
    console.warn("GET /providers:", error.message);
  }
}

// ---------------------------------------------------------------- key and viewer dialogs

function syncKeyButton() {
  const key = localStorage.getItem(KEY_STORAGE);
  const button = $("#key-button");
  button.hidden = !key;
  button.textContent = key ? `Key …${key.slice(-4)}` : "API key";
  button.setAttribute("aria-label", "Change or forget the API key");
}

function setUpKeyDialog() {
  const dialog = $("#key-dialog");
  $("#key-form").addEventListener("submit", () => {
    const key = $("#api-key").value.trim();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    keySaved = Boolean(key);
    syncKeyButton();
  });
  $("#key-forget").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORAGE);
    location.reload();
  });
  $("#key-button").addEventListener("click", () => {
    $("#key-reason").textContent = "Jobs belong to the key's account; another key shows its own jobs.";
    $("#key-forget").hidden = false;
    $("#api-key").value = "";
    keySaved = false;
    // Another key is another account: start over with its jobs and its event stream.
    dialog.addEventListener("close", () => keySaved && location.reload(), { once: true });
    dialog.showModal();
  });
}

function openViewer(url, label) {
  $("#viewer-image").src = url;
  $("#viewer-image").alt = label;
  $("#viewer-caption").textContent = label;
  $("#viewer-open").href = url;
  $("#viewer").showModal();
}

function setUpViewer() {
  const viewer = $("#viewer");
  $("#viewer-close").addEventListener("click", () => viewer.close());
  viewer.addEventListener("click", (event) => {
    if (event.target === viewer) viewer.close(); // a click on the backdrop
  });
}

// ---------------------------------------------------------------- views

const chat = createChat({
  api,
  ApiError,
  mediaSlot,
  onJob: (job) => upsert(job),
  knownJob: (jobId) => state.jobs.get(jobId),
});

function route() {
  const match = location.hash.match(/^#\/chat(?:\/([0-9a-fA-F-]{36}))?$/);
  $("#create-view").hidden = Boolean(match);
  $("#chat-view").hidden = !match;
  for (const [link, on] of [
    [$("#nav-create"), !match],
    [$("#nav-chat"), Boolean(match)],
  ]) {
    if (on) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (match) chat.open(match[1] || null);
}

// ---------------------------------------------------------------- start

async function start() {
  syncKind();
  syncKeyButton();
  setUpKeyDialog();
  setUpViewer();
  form.addEventListener("change", (event) => {
    if (event.target.name === "kind") syncKind();
  });
  form.addEventListener("submit", submitJob);
  $("#more").addEventListener("click", async () => {
    if (!state.next) return;
    $("#more").disabled = true;
    try {
      await loadJobs(state.next);
    } finally {
      $("#more").disabled = false;
    }
  });
  window.addEventListener("hashchange", route);
  route();
  await loadProviders();
  try {
    await loadJobs("/generations");
  } catch (error) {
    const notice = $("#list-error");
    notice.textContent = `Your jobs could not be loaded: ${error.message}`;
    notice.hidden = false;
  }
  updateCount();
  followEvents();
}

start();
