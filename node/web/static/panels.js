/* Kith's browser client: members, peers, dialogs and files (app.js has the rest).
 *
 * The members pane lists the watched group's members (presence, role, a ✔ for the
 * ones whose fingerprint the user verified); clicking one opens its dialog: the
 * fingerprint in large digits, the "verified" switch (the web op "verify") and, for
 * owners and admins, role, mute, remove and ban. Below: adding a peer by name,
 * approving joiners of a whitelist group, lifting bans, leaving, and the peers the
 * node knows. Files go up with XMLHttpRequest (POST /api/upload, with its progress
 * events) and come down as plain links to /api/file (the browser saves them).
 */
"use strict";

const ADMIN_ROLES = ["owner", "admin"];
let currentUpload = null; // {name, upload id, finished} of the file being sent
let uploadHideTimer = null;
let memberShown = null;   // the member whose dialog is open

function isVerified(peerId) {
  return state.verified.has(peerId);
}

function myRole() {
  const g = currentGroup();
  return g ? g.role : null;
}

function peerLabel(peer) {
  const same = state.peers.filter((p) => p.name && p.name === peer.name).length;
  return !peer.name ? peer.short_id : same > 1 ? `${peer.name} (${peer.short_id})` : peer.name;
}

// -- members -----------------------------------------------------------------------

function presenceText(m) {
  if (m.me) return "you";
  if (state.typing.includes(m.name)) return "typing…";
  if (m.presence === "offline" && m.last_seen) return `offline, seen ${timeText(m.last_seen)}`;
  return m.presence;
}

function renderMembers() {
  const list = $("member-list");
  list.replaceChildren();
  $("members-title").textContent = state.current ? `Members (${state.members.length})` : "Members";
  for (const m of state.members) {
    const b = button("", () => openMemberDialog(m.peer_id), "member");
    b.append(el("span", `dot ${m.me ? "online" : m.presence}`, "●"));
    b.append(el("span", "member-name", m.name));
    if (isVerified(m.peer_id)) {
      const mark = el("span", "verified-mark", "✔");
      mark.title = "fingerprint verified";
      b.append(mark);
    }
    if (m.role !== "member") b.append(el("span", "tag", m.role));
    if (m.muted) b.append(el("span", "tag", "muted"));
    b.append(el("span", "presence", presenceText(m)));
    const item = el("li");
    item.append(b);
    list.append(item);
  }
}

/* The parts of the pane for this group: add, approve, bans, leave. */
function renderAdmin() {
  const g = currentGroup();
  const admin = g && ADMIN_ROLES.includes(g.role);
  $("group-admin").hidden = !(g && g.member);
  $("leave-group").hidden = !(g && g.member);
  $("open-group-id").hidden = !(g && g.mode === "open");
  if (!g) return;
  $("group-id").textContent = g.id;
  const memberIds = new Set(state.members.map((m) => m.peer_id));
  fillPeerSelect($("add-peer"), state.peers.filter((p) => p.peer_id && !memberIds.has(p.peer_id)));
  const whitelist = g.mode === "open" && g.policy === "whitelist" && admin;
  $("approve-box").hidden = !whitelist;
  if (whitelist) {
    const approved = new Set(g.approved || []);
    fillPeerSelect($("approve-peer"), state.peers.filter(
      (p) => p.peer_id && !approved.has(p.peer_id) && !memberIds.has(p.peer_id)));
    peerRows($("approved-list"), g.approved || [], "Take back",
      (id) => attempt("group.approve", { group: g.id, peer: id, unapprove: true }));
  }
  $("banned-box").hidden = !(g.banned || []).length;
  peerRows($("banned-list"), g.banned || [], admin ? "Lift ban" : null,
    (id) => attempt("group.unban", { group: g.id, peer: id }, "ban lifted"));
}

function fillPeerSelect(select, peers) {
  const chosen = select.value;
  select.replaceChildren();
  if (!peers.length) select.append(el("option", "", "(no peers to add)"));
  for (const p of peers) {
    const option = el("option", "", peerLabel(p));
    option.value = p.peer_id;
    select.append(option);
  }
  if (peers.some((p) => p.peer_id === chosen)) select.value = chosen;
  select.disabled = !peers.length;
}

function nameOfPeer(peerId) {
  const m = state.members.find((x) => x.peer_id === peerId);
  const p = state.peers.find((x) => x.peer_id === peerId);
  return (m && m.name) || (p && p.name) || peerId.slice(0, 8);
}

function peerRows(list, ids, label, action) {
  list.replaceChildren();
  for (const id of ids) {
    const item = el("li", "", nameOfPeer(id) + " ");
    if (label) item.append(button(label, () => action(id)));
    list.append(item);
  }
}

function renderPeers() {
  const list = $("peer-list");
  list.replaceChildren();
  const known = state.peers.filter((p) => p.peer_id);
  if (!known.length) list.append(el("li", "hint", "No peers found yet."));
  for (const p of known) {
    const item = el("li", "peer");
    item.append(el("span", `dot ${p.state}`, "●"), el("span", "member-name", p.name || "?"),
      el("span", "hint", ` ${p.short_id} · ${p.state}`));
    if (isVerified(p.peer_id)) item.append(el("span", "verified-mark", "✔"));
    list.append(item);
  }
  renderAdmin();
}

// -- a member's dialog ----------------------------------------------------------------

function openMemberDialog(peerId) {
  const m = state.members.find((x) => x.peer_id === peerId);
  if (!m) return;
  memberShown = m;
  $("member-name").textContent = m.name;
  $("member-detail").textContent = `${m.role} · ${presenceText(m)} · ${m.peer_id}`;
  const fp = m.me && state.me && state.me.fingerprint ? state.me.fingerprint
    : fingerprintOf(m.peer_id);
  $("member-fingerprint").textContent = fp || "(not a valid peer id)";
  const box = $("member-verified");
  box.checked = isVerified(m.peer_id);
  box.disabled = m.me;
  $("member-admin").hidden = m.me || !ADMIN_ROLES.includes(myRole());
  $("member-role").value = m.role === "owner" ? "admin" : m.role;
  $("member-mute").textContent = m.muted ? "Unmute" : "Mute";
  $("member-error").textContent = "";
  $("member-dialog").showModal();
}

/* Run a member op on the member whose dialog is open (after a question, if any). */
async function memberAction(op, extra, done, question, okLabel) {
  const m = memberShown;
  if (!m) return;
  if (question && !(await confirmAction(question(m.name), okLabel))) return;
  try {
    await call(op, { group: state.current, peer: m.peer_id, ...extra });
    $("member-dialog").close();
    showStatus(`${done}: ${m.name}`);
  } catch (err) {
    $("member-error").textContent = err.message;
  }
}

async function setVerified() {
  const m = memberShown;
  const on = $("member-verified").checked;
  try {
    await call("verify", { peer: m.peer_id, verified: on });
    if (on) state.verified.add(m.peer_id); else state.verified.delete(m.peer_id);
    renderMembers(); renderPeers(); renderConversation();
  } catch (err) {
    $("member-error").textContent = err.message;
  }
}

// -- dialogs -------------------------------------------------------------------------

/* A yes/no question in a <dialog> (window.confirm would block the page). */
function confirmAction(question, okLabel = "OK") {
  const dialog = $("confirm-dialog");
  $("confirm-text").textContent = question;
  $("confirm-yes").textContent = okLabel;
  dialog.showModal();
  return new Promise((resolve) => {
    const finish = (answer) => {
      $("confirm-yes").onclick = null; $("confirm-no").onclick = null;
      dialog.onclose = null;
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    $("confirm-yes").onclick = () => finish(true);
    $("confirm-no").onclick = () => finish(false);
    dialog.onclose = () => finish(false);
  });
}

async function createGroup(e) {
  e.preventDefault();
  const params = { name: $("create-name").value.trim(), mode: $("create-mode").value };
  if (params.mode === "open") params.policy = $("create-policy").value;
  if ($("create-share").checked) params.share_history = true;
  try {
    const group = await call("group.create", params);
    $("create-dialog").close();
    showStatus(`created ${group.name}`);
    state.groups = [...state.groups.filter((g) => g.id !== group.id), group];
    renderGroups();
    openGroup(group.id);
  } catch (err) {
    $("create-error").textContent = err.message;
  }
}

async function discoverGroups() {
  const list = $("discover-list");
  list.replaceChildren();
  $("discover-status").textContent = "Listening for open groups on the LAN…";
  $("join-id").value = "";
  $("discover-dialog").showModal();
  try {
    const found = await call("group.discover", { timeout: 3 });
    $("discover-status").textContent = found.length ? "" : "No open groups heard nearby yet.";
    for (const g of found) {
      const serving = `${g.servers.length} member(s) serving`;
      const item = el("li", "", `${g.name} · ${g.policy} · ${serving} `);
      if (g.joined) item.append(el("span", "tag", "joined"));
      else item.append(button("Join", () => joinGroup(g)));
      list.append(item);
    }
  } catch (err) {
    $("discover-status").textContent = err.message;
  }
}

async function joinGroup(g) {
  $("discover-status").textContent = `Joining ${g.name || g.id}…`;
  try {
    const group = await call("group.join", { group: g.id });
    $("discover-dialog").close();
    openGroup(group.id);
  } catch (err) {
    $("discover-status").textContent = err.message;
  }
}

// -- files ----------------------------------------------------------------------------

function sizeText(size) {
  for (const [unit, scale] of [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]]) {
    if (size >= scale) return `${(size / scale).toFixed(1)} ${unit}`;
  }
  return `${size} B`;
}

function fileElement(view) {
  const f = view.file;
  const box = el("div", "file");
  box.append(el("span", "file-name", `📎 ${f.name} (${sizeText(f.size)})`));
  if (f.state === "complete") {
    const link = el("a", "save", "Save file");
    link.href = `/api/file?group=${encodeURIComponent(state.current)}&event=${view.id}`;
    link.download = f.name;
    box.append(link);
  } else if (f.state === "fetching") {
    const bar = el("progress");
    bar.max = 100;
    bar.value = Math.floor((100 * f.bytes_have) / Math.max(f.size, 1));
    bar.setAttribute("aria-label", `Receiving ${f.name}`);
    box.append(bar, el("span", "hint", ` receiving ${bar.value}%`));
  } else if (f.state === "too large") {
    box.append(el("span", "hint", " not fetched: over this node's size limit"));
  } else {
    box.append(el("span", "hint", ` ${f.state}`));
  }
  return box;
}

/* The bar of the current upload; it never goes back (pushes and polls may cross). */
function setUploadBar(percent, text) {
  clearTimeout(uploadHideTimer);
  $("transfer").hidden = false;
  const upload = currentUpload;
  const value = Math.max(0, Math.min(100, Math.round(percent)));
  upload.shown = Math.max(upload.shown || 0, value);
  $("upload-progress").value = upload.shown;
  $("upload-label").textContent = text;
}

function finishUpload(text, failed) {
  if (!currentUpload || currentUpload.finished) return;
  currentUpload.finished = true;
  if (!failed) setUploadBar(100, text);
  else { $("upload-label").textContent = text; showStatus(text, true); }
  uploadHideTimer = setTimeout(() => { $("transfer").hidden = true; }, 5000);
}

/* POST the file to kith web (first half of the bar), then the node sends it (second half). */
function uploadFile(file) {
  if (!state.current || !file) return;
  const group = state.current;
  currentUpload = { name: file.name, id: null, finished: false };
  const upload = currentUpload;
  setUploadBar(0, `Sending ${file.name}`);
  const caption = state.editing ? "" : $("message").value.trim(); // what was typed goes along
  let url = `/api/upload?group=${encodeURIComponent(group)}&name=${encodeURIComponent(file.name)}`;
  if (caption) url += `&text=${encodeURIComponent(caption)}`;
  const xhr = new XMLHttpRequest();
  xhr.open("POST", url);
  xhr.upload.addEventListener("progress", (e) => {
    if (e.lengthComputable) setUploadBar((50 * e.loaded) / e.total, `Sending ${file.name}`);
  });
  xhr.addEventListener("load", () => {
    let answer = null;
    try { answer = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
    if (!answer || !answer.ok) {
      finishUpload(`${file.name} not sent: ${answer ? answer.error : `HTTP ${xhr.status}`}`, true);
      return;
    }
    if (caption && $("message").value.trim() === caption) $("message").value = "";
    upload.id = answer.result.upload;
    followUpload(group, upload, answer.result);
  });
  xhr.addEventListener("error", () => finishUpload(`${file.name} not sent: connection lost`, true));
  xhr.send(file);
}

/* The node's side of an upload: its file.upload state until sent (pushes also move it). */
async function followUpload(group, upload, view) {
  while (upload === currentUpload && !upload.finished) {
    if (view.state === "sent") return finishUpload(`Sent ${view.name}`);
    if (view.state === "failed") return finishUpload(`${view.name} not sent: ${view.error}`, true);
    setUploadBar(50 + (50 * view.done) / Math.max(view.size, 1), `Encrypting ${view.name}`);
    await new Promise((r) => setTimeout(r, 500));
    try { view = await call("file.upload", { group, upload: upload.id }); } catch { return; }
  }
}

function showTransfer(msg) {
  const percent = (100 * msg.done) / Math.max(msg.total, 1);
  if (msg.direction === "up") {
    const upload = currentUpload;
    if (!upload || upload.finished || (msg.upload && upload.id && msg.upload !== upload.id)) return;
    if (msg.state === "sent" || (msg.total && msg.done >= msg.total && msg.event)) {
      finishUpload(`Sent ${msg.name || upload.name}`);
    } else {
      setUploadBar(50 + percent / 2, `Encrypting ${msg.name || upload.name}`);
    }
    return;
  }
  if (msg.group !== state.current || !msg.event) return;
  const view = state.log.find((v) => v.id === msg.event);
  if (!view || !view.file) return;
  view.file.bytes_have = msg.done;
  if (msg.done >= msg.total) view.file.state = "complete";
  renderConversation();
}

// -- set up -----------------------------------------------------------------------------

function setUpPanels() {
  $("new-group").addEventListener("click", () => {
    $("create-form").reset();
    $("create-policy-row").hidden = true;
    $("create-error").textContent = "";
    $("create-dialog").showModal();
  });
  $("create-mode").addEventListener("change", () => {
    $("create-policy-row").hidden = $("create-mode").value !== "open";
  });
  $("create-form").addEventListener("submit", createGroup);
  $("create-cancel").addEventListener("click", () => $("create-dialog").close());
  $("discover").addEventListener("click", discoverGroups);
  $("discover-close").addEventListener("click", () => $("discover-dialog").close());
  $("join-form").addEventListener("submit", (e) => {
    e.preventDefault();
    joinGroup({ id: $("join-id").value.trim() });
  });
  $("add-member").addEventListener("click", () => {
    const select = $("add-peer");
    if (!select.value || select.disabled) return;
    attempt("group.add", { group: state.current, peer: select.value, role: $("add-role").value },
      `added ${select.selectedOptions[0].textContent}`);
  });
  $("approve").addEventListener("click", () => {
    const select = $("approve-peer");
    if (select.value && !select.disabled) {
      attempt("group.approve", { group: state.current, peer: select.value }, "approved");
    }
  });
  $("leave-group").addEventListener("click", async () => {
    const g = currentGroup();
    if (g && await confirmAction(`Leave ${groupName(g)}?`, "Leave")) {
      attempt("group.leave", { group: g.id }, `you left ${groupName(g)}`);
    }
  });
  $("member-verified").addEventListener("change", setVerified);
  $("member-set-role").addEventListener("click", () =>
    memberAction("group.role", { role: $("member-role").value }, "role changed"));
  $("member-mute").addEventListener("click", () => (memberShown && memberShown.muted
    ? memberAction("group.mute", { unmute: true }, "unmuted")
    : memberAction("group.mute", {}, "muted")));
  $("member-remove").addEventListener("click", () => memberAction("group.remove", {}, "removed",
    (name) => `Remove ${name} from the group?`, "Remove"));
  $("member-ban").addEventListener("click", () => memberAction("group.ban", {}, "banned",
    (name) => `Ban ${name}: remove them and keep them out?`, "Ban"));
  $("member-close").addEventListener("click", () => $("member-dialog").close());
  $("attach").addEventListener("click", () => $("file-input").click());
  $("file-input").addEventListener("change", () => {
    uploadFile($("file-input").files[0]);
    $("file-input").value = "";
  });
}
