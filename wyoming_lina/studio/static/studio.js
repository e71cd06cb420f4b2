// Lina voice studio: talks to the JSON API (docs/studio.md) with relative URLs, so it works
// behind Home Assistant ingress or any reverse proxy under a path prefix.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { status: null, voices: [], clip: null, clipName: "", recorder: null, streams: new Set() };

// --- talking to the server ---------------------------------------------------------------
const FRIENDLY = {
  unauthorized: "This studio is protected by an access token. Enter it to continue.",
  "cross-origin": "The server refused the change because it did not come from this page. Reload the page and try again.",
  "no-speech-to-text": "Speech-to-text is not set up on the server, so the words cannot be filled in automatically. Type exactly what is said in the recording.",
  starting: "The server is still starting up. Try again in a minute.",
  overloaded: "The server is busy speaking for others. Try again in a moment.",
};

class ApiError extends Error {
  constructor(message, code, status) { super(message); this.code = code; this.status = status; }
}

function token() { return sessionStorage.getItem("lina-token") || ""; }

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token()) headers.Authorization = "Bearer " + token();
  let response;
  try {
    response = await fetch(path, Object.assign({}, options, { headers }));
  } catch (err) {
    throw new ApiError("Cannot reach the server. Check that it is running and that this computer can reach it.", "network", 0);
  }
  if (response.status === 401) {
    await askToken();
    return api(path, options);
  }
  if (!response.ok) {
    let body = {};
    try { body = await response.json(); } catch (err) { /* not JSON */ }
    const code = body.code || "http-" + response.status;
    let message = FRIENDLY[code] || body.error || "The server answered with an error (" + response.status + ").";
    if (code === "transcription-failed") message = "Speech-to-text did not work: " + body.error + " You can type the words instead.";
    throw new ApiError(message, code, response.status);
  }
  return response;
}

function askToken() {
  return new Promise((resolve) => {
    const dialog = $("token-dialog");
    $("token-form").onsubmit = () => { sessionStorage.setItem("lina-token", $("token-input").value.trim()); };
    dialog.onclose = () => resolve();
    dialog.showModal();
  });
}

function notify(message, kind = "error") {
  const box = $("notice");
  box.textContent = message;
  box.className = "notice" + (kind === "info" ? " info" : "");
  box.hidden = false;
  box.scrollIntoView({ behavior: "smooth", block: "nearest" });
  clearTimeout(notify.timer);
  if (kind === "info") notify.timer = setTimeout(() => { box.hidden = true; }, 6000);
}

function clearNotice() { $("notice").hidden = true; }

async function busy(button, work) {
  button.disabled = true;
  try { clearNotice(); await work(); } catch (err) { notify(err.message || String(err)); } finally { button.disabled = false; }
}

// --- status and voices ------------------------------------------------------------------
async function loadStatus() {
  const pill = $("status");
  try {
    state.status = await (await api("api/status")).json();
    pill.textContent = state.status.ready ? "Ready" : "Starting…";
    pill.className = "pill " + (state.status.ready ? "ok" : "warn");
    const asr = state.status.speech_to_text;
    $("fill-text").disabled = !asr;
    $("asr-hint").textContent = asr ? "" : "Speech-to-text is not set up on the server (--asr-uri), so type the words.";
    $("add-text").placeholder = asr ? "Leave empty to have it filled in by speech-to-text" : "Type exactly what is said";
    if (!state.status.ready) setTimeout(loadStatus, 3000);
  } catch (err) {
    pill.textContent = "Offline";
    pill.className = "pill bad";
    setTimeout(loadStatus, 5000);
  }
}

const KINDS = { prompt: "cloned from a recording", state: "tuned voice", "prompt+state": "tuned voice with a recording" };

async function loadVoices() {
  state.voices = await (await api("api/voices")).json();
  const list = $("voices");
  list.replaceChildren();
  if (!state.voices.length) list.append(el("li", { className: "empty" }, "No voices yet."));
  for (const voice of state.voices) list.append(voiceRow(voice));
  const select = $("try-voice");
  const chosen = select.value;
  select.replaceChildren(...state.voices.filter((v) => v.usable).map((v) => el("option", { value: v.name }, v.name + (v.default ? " (default)" : ""))));
  if (chosen && state.voices.some((v) => v.name === chosen && v.usable)) select.value = chosen;
  else { const d = state.voices.find((v) => v.default); if (d) select.value = d.name; }
}

function voiceRow(voice) {
  const badges = [];
  if (voice.tuning_job) badges.push(el("span", { className: "badge busy" }, "Being tuned"));
  else if (voice.usable) badges.push(el("span", { className: "badge ready" }, "Ready"));
  else badges.push(el("span", { className: "badge broken" }, "Not usable"));
  if (voice.default) badges.push(el("span", { className: "badge default" }, "Default"));
  const facts = [KINDS[voice.kind] || voice.kind, (voice.languages || []).join(", ")];
  if (voice.seconds) facts.push(voice.seconds.toFixed(1) + " s clip");
  // the store's made-up description ("alice (cloned from a clip)") says nothing the line above does not
  const said = voice.description && !voice.description.startsWith(voice.name + " (") ? voice.description : "";
  const about = voice.usable || voice.tuning_job ? said : "Why: " + voice.problem;
  const actions = el("div", { className: "actions" });
  if (voice.usable) {
    actions.append(button("Listen", "secondary small", (b) => busy(b, () => speak(voice.name))));
    if (!voice.default && !(state.status && state.status.default_fixed)) {
      actions.append(button("Make default", "secondary small", (b) => busy(b, () => makeDefault(voice.name))));
    }
  }
  if (voice.editable && !voice.default && !voice.tuning_job) {
    actions.append(button("Remove", "danger small", (b) => busy(b, () => removeVoice(voice.name))));
  }
  const who = el("div", { className: "who" },
    el("div", {}, el("span", { className: "name" }, voice.name), ...badges),
    el("div", { className: "desc" }, facts.filter(Boolean).join(" · ")),
    el("div", { className: "desc" }, about || ""));
  const row = el("li", {}, who, actions);
  row.dataset.voice = voice.name;
  return row;
}

async function speak(name) {
  const text = $("try-text").value.trim();
  if (!text) throw new ApiError("Type something for the voice to say.", "no-text", 400);
  const response = await api("api/speak", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ text, voice: name }),
  });
  const player = $("player");
  if (player.src) URL.revokeObjectURL(player.src);
  player.src = URL.createObjectURL(await response.blob());
  await player.play().catch(() => notify("Press play to hear it (the browser did not allow playing by itself).", "info"));
}

async function makeDefault(name) {
  await api("api/default-voice", { method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ voice: name }) });
  await loadVoices();
  notify(name + " is now the default voice.", "info");
}

async function removeVoice(name) {
  if (!confirm("Remove the voice " + name + "? This cannot be undone.")) return;
  await api("api/voices/" + encodeURIComponent(name), { method: "DELETE" });
  await loadVoices();
  notify(name + " was removed.", "info");
}

// --- adding a voice -----------------------------------------------------------------------
function setClip(blob, name) {
  state.clip = blob;
  state.clipName = name;
  const player = $("clip-player");
  if (player.src) URL.revokeObjectURL(player.src);
  player.src = URL.createObjectURL(blob);
  player.hidden = false;
  $("clip-info").textContent = "Recording: " + name + " (" + Math.round(blob.size / 1024) + " KB)";
}

async function toggleRecording() {
  if (state.recorder) { await state.recorder.stop(); return; }
  if (!navigator.mediaDevices || !window.AudioWorkletNode) {
    throw new ApiError("This browser cannot record here: recording needs a secure (https) connection, or the studio opened as localhost. Choose a file instead.", "no-microphone", 0);
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
  } catch (err) {
    throw new ApiError("The microphone could not be used (" + err.name + "). Allow the microphone for this page, or choose a file instead.", "no-microphone", 0);
  }
  const context = new AudioContext();
  await context.audioWorklet.addModule("static/recorder-worklet.js");
  const source = context.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(context, "recorder");
  const blocks = [];
  node.port.onmessage = (event) => blocks.push(event.data);
  source.connect(node);
  const started = Date.now();
  const button = $("record");
  button.textContent = "■ Stop recording";
  button.classList.add("recording");
  const timer = setInterval(() => {
    const seconds = (Date.now() - started) / 1000;
    $("record-time").textContent = seconds.toFixed(0) + " s" + (seconds < 3 ? " (speak for 3 to 15 s)" : "");
    if (seconds >= 30) state.recorder.stop();
  }, 250);
  state.recorder = {
    async stop() {
      clearInterval(timer);
      source.disconnect();
      stream.getTracks().forEach((t) => t.stop());
      const rate = context.sampleRate;
      await context.close();
      state.recorder = null;
      button.textContent = "● Record with the microphone";
      button.classList.remove("recording");
      $("record-time").textContent = "";
      setClip(wavBlob(blocks, rate), "microphone recording.wav");
    },
  };
}

function wavBlob(blocks, rate) {
  const length = blocks.reduce((n, b) => n + b.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * length));
  const text = (offset, s) => { for (let i = 0; i < s.length; i++) view.setUint8(offset + i, s.charCodeAt(i)); };
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * length, true); text(8, "WAVE"); text(12, "fmt ");
  view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, 2 * rate, true); view.setUint16(32, 2, true); view.setUint16(34, 16, true);
  text(36, "data"); view.setUint32(40, 2 * length, true);
  let offset = 44;
  for (const block of blocks) for (const s of block) { view.setInt16(offset, Math.max(-1, Math.min(1, s)) * 32767, true); offset += 2; }
  return new Blob([view], { type: "audio/wav" });
}

function clipForm() {
  if (!state.clip) throw new ApiError("Add a recording of the voice first: choose a file or record one.", "no-audio", 400);
  const form = new FormData();
  form.append("audio", state.clip, state.clipName);
  return form;
}

async function fillText() {
  const form = clipForm();
  form.append("language", $("add-language").value.trim());
  const body = await (await api("api/transcribe", { method: "POST", body: form })).json();
  $("add-text").value = body.text;
  notify("Check the words and correct them if needed: they must be exactly what is said.", "info");
}

async function addVoice(event) {
  event.preventDefault();
  const form = clipForm();
  for (const field of ["name", "description", "language", "text"]) form.append(field, $("add-" + field).value.trim());
  const voice = await (await api("api/voices", { method: "POST", body: form })).json();
  $("add-form").reset();
  state.clip = null;
  $("clip-player").hidden = true;
  $("clip-info").textContent = "";
  await loadVoices();
  let message = "The voice " + voice.name + " was added.";
  if (voice.transcribed) message += " Speech-to-text heard: \u201c" + voice.transcript + "\u201d.";
  if (voice.warnings && voice.warnings.length) message += " Note: " + voice.warnings.join(" ");
  notify(message, "info");
}

// --- tuned voices -------------------------------------------------------------------------
async function startTuning(event) {
  event.preventDefault();
  const files = $("tune-files").files;
  if (!files.length) throw new ApiError("Choose one or more recordings of the voice.", "no-audio", 400);
  const name = $("tune-name").value.trim();
  const form = new FormData();
  for (const file of files) form.append("audio", file, file.name);
  form.append("max_steps", $("tune-length").value);
  form.append("language", $("tune-language").value.trim());
  const job = await (await api("api/voices/" + encodeURIComponent(name) + "/tune", { method: "POST", body: form })).json();
  $("tune-form").reset();
  $("tune-info").textContent = "";
  showJob(job);
  await loadVoices();
}

function describeTime(seconds) {
  if (seconds == null) return "";
  if (seconds < 90) return "about " + Math.max(1, Math.round(seconds)) + " s left";
  if (seconds < 5400) return "about " + Math.round(seconds / 60) + " min left";
  return "about " + (seconds / 3600).toFixed(1) + " h left";
}

const PHASES = { waiting: "Waiting", starting: "Starting", transcribing: "Cutting and transcribing the recordings", encoding: "Preparing the clips", tuning: "Learning the voice" };

function showJob(job) {
  let row = document.querySelector('#jobs li[data-job="' + job.id + '"]');
  if (!row) {
    row = el("li", {});
    row.dataset.job = job.id;
    $("jobs").prepend(row);
  }
  const active = job.state === "queued" || job.state === "running";
  const title = el("strong", {}, "Tuned voice " + job.voice);
  const what = { queued: "Waiting", running: PHASES[job.phase] || "Working", done: "Finished: the voice is ready", failed: "Failed", cancelled: "Cancelled" }[job.state];
  const action = active
    ? button("Cancel", "danger small", (b) => busy(b, async () => { await api("api/jobs/" + job.id, { method: "DELETE" }); }))
    : button("Dismiss", "secondary small", (b) => busy(b, async () => { await api("api/jobs/" + job.id, { method: "DELETE" }); row.remove(); }));
  const parts = [el("div", { className: "top" }, el("span", {}, title, " \u2014 " + what), action)];
  if (active) {
    const bar = el("progress", { max: 1, value: job.progress || 0 });
    parts.push(bar, el("div", { className: "muted" }, Math.round(100 * (job.progress || 0)) + "% \u00b7 " + (job.message || "") + (job.eta_seconds != null ? " \u00b7 " + describeTime(job.eta_seconds) : "")));
  }
  if (job.state === "failed") parts.push(el("div", { className: "failed" }, "Why: " + (job.error || "unknown") + ". Nothing was kept; you can try again."));
  row.replaceChildren(...parts);
  row.dataset.state = job.state;
  if (active) follow(job.id);
}

async function follow(id) {
  if (state.streams.has(id)) return;
  state.streams.add(id);
  try {
    const response = await api("api/jobs/" + id + "/events");
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const message = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = message.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (!data) continue;
        const job = JSON.parse(data);
        state.streams.delete(id);
        showJob(job);
        state.streams.add(id);
        if (!["queued", "running"].includes(job.state)) loadVoices().catch(() => {});
      }
    }
  } catch (err) {
    /* the page shows the last known state; a reload follows the job again */
  } finally {
    state.streams.delete(id);
  }
}

async function loadJobs() {
  const jobs = await (await api("api/jobs")).json();
  for (const job of jobs) showJob(job);
}

// --- small helpers ------------------------------------------------------------------------
function el(tag, props, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function button(label, className, onClick) {
  const b = el("button", { type: "button", className }, label);
  b.addEventListener("click", () => onClick(b));
  return b;
}

function on(id, event, work) {
  $(id).addEventListener(event, (e) => { const b = e.submitter || $(id); busy(b, () => work(e)); });
}

document.addEventListener("DOMContentLoaded", () => {
  on("try-speak", "click", () => speak($("try-voice").value));
  on("record", "click", toggleRecording);
  on("fill-text", "click", fillText);
  on("add-form", "submit", addVoice);
  on("tune-form", "submit", startTuning);
  $("add-file").addEventListener("change", (e) => { const f = e.target.files[0]; if (f) setClip(f, f.name); });
  $("tune-files").addEventListener("change", (e) => {
    const files = [...e.target.files];
    const mb = files.reduce((n, f) => n + f.size, 0) / 1048576;
    $("tune-info").textContent = files.length ? files.length + " recording(s), " + mb.toFixed(1) + " MB" : "";
  });
  loadStatus().then(() => Promise.all([loadVoices(), loadJobs()])).catch((err) => notify(err.message));
});
