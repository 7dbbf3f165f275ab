/* Kith's browser client: the connection, the groups, writing, notifications.
 *
 * How the page works: it opens one WebSocket to /ws (the session cookie set by
 * `kith web`'s token URL authenticates it) and sends ops as {"id", "op", ...params}
 * (the control socket's ops, see node/web/protocol.py); call() returns a Promise of
 * the answer. The server pushes the state: "groups", "peers", and for the group this
 * page watches ("watch" op) "log" (the whole conversation, re-rendered each time),
 * "typing" and "transfer"; "event" pushes of every group drive notifications; "node"
 * says the node went down or came back. `state` holds what the node last told us and
 * every render function draws from it. Text from the network is only ever inserted
 * with textContent / text nodes, never as HTML (the CSP forbids inline scripts too).
 * conversation.js draws the conversation; panels.js has the members and peers pane,
 * the dialogs and file transfers; fingerprint.js computes fingerprints.
 */
"use strict";

const state = {
  me: null,            // the id op's result: {peer_id, short_id, name, fingerprint, ...}
  mode: "",            // "attached" or "in this process"
  groups: [],          // group.list
  peers: [],           // peers
  verified: new Set(), // peer ids the user checked
  current: null,       // the watched group's id
  log: [],             // its log
  members: [],         // its group.members
  typing: [],          // names typing in it
  replyTo: null,       // the message being replied to
  pickerFor: null,     // the message whose emoji picker is open
  editing: null,       // the message being edited
  nodeUp: true,
  connected: false,    // the WebSocket is open
  wasConnected: false, // it was open once (else: still starting, no banner)
};

let socket = null;
let nextId = 1;
let retryDelay = 500;
let lastTypingSent = 0;
const pending = new Map();

const $ = (id) => document.getElementById(id);

/* An element with a class and text (always text, never HTML). */
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function button(label, onClick, className) {
  const b = el("button", className, label);
  b.type = "button";
  b.addEventListener("click", onClick);
  return b;
}

// -- connection ------------------------------------------------------------------

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(`${scheme}//${location.host}/ws`);
  socket.addEventListener("open", () => {
    state.connected = true;
    state.wasConnected = true;
    retryDelay = 500;
    updateBanner();
    reloadState();
  });
  socket.addEventListener("message", (e) => onMessage(JSON.parse(e.data)));
  socket.addEventListener("close", () => {
    state.connected = false;
    for (const { reject } of pending.values()) reject(new Error("connection lost"));
    pending.clear();
    updateBanner();
    setTimeout(connect, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 4000);
  });
}

/* Run an op on the node; resolves with its result, rejects with its one-line error. */
function call(op, params = {}) {
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    return Promise.reject(new Error("not connected to kith web"));
  }
  const id = nextId++;
  socket.send(JSON.stringify({ ...params, id, op }));
  return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
}

/* call(), with a failure shown in the status line instead of thrown. */
async function attempt(op, params, done) {
  try {
    const result = await call(op, params);
    if (done) showStatus(done);
    return result;
  } catch (err) {
    showStatus(err.message, true);
    return undefined;
  }
}

function onMessage(msg) {
  if (msg.push) return onPush(msg);
  const waiter = pending.get(msg.id);
  if (!waiter) return;
  pending.delete(msg.id);
  if (msg.ok) waiter.resolve(msg.result);
  else waiter.reject(new Error(msg.error || "failed"));
}

function onPush(msg) {
  switch (msg.push) {
    case "hello": // me is null while the node is down
      if (msg.me) state.me = msg.me;
      state.mode = msg.mode || "";
      state.nodeUp = Boolean(msg.me);
      renderMe();
      updateBanner();
      break;
    case "groups": setGroups(msg.groups || []); break;
    case "peers": state.peers = msg.peers || []; renderPeers(); renderMembers(); break;
    case "log":
      if (msg.group !== state.current) break;
      state.log = msg.log || [];
      if (msg.members) state.members = msg.members;
      renderConversation();
      renderMembers();
      break;
    case "typing":
      if (msg.group === state.current) {
        state.typing = msg.names || [];
        renderTyping();
        renderMembers();
      }
      break;
    case "event":
      stopTyping(msg.group, msg.event);
      announce(msg.group, msg.event);
      maybeNotify(msg.group, msg.event);
      break;
    case "transfer": showTransfer(msg); break;
    case "node":
      state.nodeUp = msg.state === "up";
      updateBanner();
      if (state.nodeUp) reloadState();
      break;
  }
}

function updateBanner() {
  const banner = $("banner");
  let text = "";
  if (!state.connected && state.wasConnected) {
    text = "Lost the connection to kith web: reconnecting… (if kith web was restarted, "
      + "open the new URL it printed)";
  } else if (!state.nodeUp) {
    text = "The Kith node is not running: waiting for it to come back…";
  }
  banner.textContent = text;
  banner.hidden = !text;
  document.body.classList.toggle("offline", Boolean(text));
}

/* Everything again from the node: after connecting and when the node is back. */
async function reloadState() {
  try {
    const [me, groups, peers, verified] = await Promise.all([
      call("id"), call("group.list"), call("peers"), call("verified")]);
    state.me = me;
    state.verified = new Set(verified || []);
    state.peers = peers || [];
    renderMe();
    setGroups(groups || []);
    renderPeers();
    if (state.current) await openGroup(state.current, { keepView: true });
  } catch (err) {
    if (state.connected) showStatus(err.message, true);
  }
}

let statusTimer = null;
function showStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
  clearTimeout(statusTimer);
  statusTimer = setTimeout(() => { status.textContent = ""; }, isError ? 15000 : 5000);
}

function renderMe() {
  if (!state.me) return;
  $("me").textContent = `${state.me.name} (${state.me.short_id})`;
  $("me").title = state.mode ? `node ${state.mode}` : "";
}

// -- groups ----------------------------------------------------------------------

function currentGroup() {
  return state.groups.find((g) => g.id === state.current) || null;
}

function groupName(group) {
  return group.name || group.id.slice(0, 12);
}

function setGroups(groups) {
  state.groups = groups;
  if (state.current && !currentGroup()) closeGroup();
  renderGroups();
  renderGroupHead();
  renderPinnedAndGaps();
  renderAdmin();
  if (!state.current && groups.length) openGroup(groups[0].id);
}

function renderGroups() {
  const list = $("group-list");
  list.replaceChildren();
  for (const g of state.groups) {
    const item = el("li");
    const b = button("", () => openGroup(g.id), "group");
    b.append(el("span", "group-name", groupName(g)));
    if (g.id === state.current) b.setAttribute("aria-current", "page");
    if (g.unread && (g.id !== state.current || document.hidden)) {
      b.append(el("span", "badge", g.unread));
      b.setAttribute("aria-label", `${groupName(g)}, ${g.unread} unread`);
    }
    if (g.muted) b.append(el("span", "tag", "muted"));
    if (!g.member) b.append(el("span", "tag", "left"));
    if (g.mode === "open") b.append(el("span", "tag", "open"));
    item.append(b);
    list.append(item);
  }
  $("no-groups").hidden = state.groups.length > 0;
  const unread = state.groups.reduce(
    (n, g) => n + (g.id === state.current && !document.hidden ? 0 : g.unread || 0), 0);
  document.title = unread ? `(${unread}) Kith` : "Kith";
}

async function openGroup(id, { keepView = false } = {}) {
  if (id !== state.current) {
    state.current = id;
    state.log = []; state.members = []; state.typing = [];
    cancelNote();
    $("search").value = "";
  }
  if (!keepView) showView("chat");
  renderGroups();
  renderGroupHead();
  renderConversation();
  const [log, members] = await Promise.all([
    attempt("watch", { group: id, read: !document.hidden }),
    attempt("group.members", { group: id })]);
  if (state.current !== id) return;
  if (log) state.log = log;
  if (members) state.members = members;
  renderConversation();
  renderMembers();
  renderAdmin();
}

function closeGroup() {
  state.current = null;
  state.log = []; state.members = []; state.typing = [];
  cancelNote();
  renderConversation();
  renderMembers();
}

function renderGroupHead() {
  const g = currentGroup();
  $("group-title").textContent = g ? groupName(g) : "Kith";
  const info = g ? [g.mode, `${g.members} member${g.members === 1 ? "" : "s"}`,
    g.role ? `you: ${g.role}` : "you left"] : [];
  if (g && g.policy) info.splice(1, 0, g.policy);
  $("group-info").textContent = info.join(" · ");
  const mute = $("mute-group");
  mute.disabled = !g;
  mute.setAttribute("aria-pressed", String(Boolean(g && g.muted)));
  mute.textContent = g && g.muted ? "Unmute group" : "Mute group";
  const canWrite = Boolean(g && g.member);
  $("message").disabled = !canWrite;
  $("send").disabled = !canWrite;
  $("attach").disabled = !canWrite;
}

// -- writing -----------------------------------------------------------------------

function startReply(view) {
  state.editing = null;
  state.replyTo = view;
  showNote(`Replying to ${view.author_name}: ${view.text || "(a file)"}`);
}

function startEdit(view) {
  state.replyTo = null;
  state.editing = view;
  $("message").value = view.text || "";
  showNote("Editing your message");
}

function showNote(text) {
  $("compose-note-text").textContent = text;
  $("compose-note").hidden = false;
  $("message").focus();
}

function cancelNote() {
  if (state.editing) $("message").value = "";
  state.replyTo = null;
  state.editing = null;
  $("compose-note").hidden = true;
}

/* Send (or save the edit of) what is in the box. The box empties at once, so the next
   message can be typed while this one goes; if it fails, its text comes back. */
async function submitMessage() {
  const box = $("message");
  const text = box.value.trim();
  if (!text || !state.current) return;
  const group = state.current;
  const { editing, replyTo } = state;
  const params = { group, text };
  if (editing) params.event = editing.id;
  else if (replyTo) params.reply_to = replyTo.id;
  box.value = "";
  state.editing = null;
  cancelNote();
  const ok = await attempt(editing ? "edit" : "send", params);
  if (ok === undefined && !box.value) {
    if (editing) startEdit(editing);
    else if (replyTo) startReply(replyTo);
    box.value = text;
  }
}

function react(view, emoji, remove) {
  const params = { group: state.current, event: view.id, emoji };
  if (remove) params.remove = true;
  attempt("react", params);
}

async function deleteMessage(view) {
  if (await confirmAction("Delete this message for everyone?", "Delete")) {
    attempt("delete", { group: state.current, event: view.id }, "message deleted");
  }
}

function pinMessage(view) {
  const params = { group: state.current, event: view.id };
  if (view.pinned) params.unpin = true;
  attempt("pin", params, view.pinned ? "unpinned" : "pinned");
}

/* Tab after "@bo" completes a member's name (their short id if the name has spaces). */
function completeMention(box) {
  const before = box.value.slice(0, box.selectionStart);
  const typed = before.match(/@([^\s@]*)$/);
  if (!typed) return false;
  const words = state.members.filter((m) => !m.me)
    .map((m) => (/\s/.test(m.name) ? m.short_id : m.name))
    .filter((w) => w.toLowerCase().startsWith(typed[1].toLowerCase()));
  if (!words.length) return false;
  let word = words[0]; // the longest prefix they share
  for (const w of words) {
    while (!w.toLowerCase().startsWith(word.toLowerCase())) word = word.slice(0, -1);
  }
  if (words.length > 1) showStatus(words.join(", "));
  const end = words.length === 1 ? " " : "";
  const head = before.slice(0, before.length - typed[1].length) + word + end;
  box.value = head + box.value.slice(box.selectionStart);
  box.setSelectionRange(head.length, head.length);
  return true;
}

function noteTyping() {
  const now = Date.now();
  if (!state.current || now - lastTypingSent < 3000) return;
  lastTypingSent = now;
  call("typing", { group: state.current }).catch(() => {});
}

// -- notifications and layout --------------------------------------------------------

/* A message from someone typing ends their typing mark (as in kith chat). */
function stopTyping(groupId, view) {
  if (groupId !== state.current || !view || view.kind !== "message") return;
  const typing = state.typing.filter((name) => name !== view.author_name);
  if (typing.length === state.typing.length) return;
  state.typing = typing;
  renderTyping();
  renderMembers();
}

/* Screen readers hear each new message of the open group once (the log, redrawn
   whole on every change, is aria-live="off"). */
function announce(groupId, view) {
  if (groupId === state.current && view && view.kind === "message" && !view.mine && view.text) {
    $("announce").textContent = `${view.author_name}: ${view.text}`;
  }
}

function maybeNotify(groupId, view) {
  if (!view || view.kind !== "message" || view.mine || view.deleted || !view.text) return;
  const group = state.groups.find((g) => g.id === groupId);
  if (!view.mentions_me && (!group || group.muted)) return;
  if (!document.hidden && groupId === state.current) return;
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  const title = `${view.author_name}${view.mentions_me ? " mentioned you" : ""} in ${
    group ? groupName(group) : "a group"}`;
  const note = new Notification(title, { body: view.text, tag: groupId });
  note.addEventListener("click", () => { window.focus(); openGroup(groupId); });
}

/* A hidden page reads nothing: the node marks the open conversation read (and tells the
   authors) only while the page is on screen. */
function watchOnVisibility() {
  document.addEventListener("visibilitychange", () => {
    if (state.current && state.connected) openGroup(state.current, { keepView: true });
  });
}

function setUpNotifications() {
  const b = $("enable-notifications");
  b.hidden = !("Notification" in window) || Notification.permission !== "default";
  b.addEventListener("click", async () => {
    await Notification.requestPermission();
    b.hidden = Notification.permission !== "default";
  });
}

/* On a narrow screen one pane shows at a time: "groups", "chat" or "members". */
function showView(name) {
  document.body.classList.remove("view-groups", "view-chat", "view-members");
  document.body.classList.add(`view-${name}`);
}

function setUpConversation() {
  const box = $("message");
  box.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submitMessage();
    } else if (e.key === "Tab" && !e.shiftKey && completeMention(box)) {
      e.preventDefault();
    } else if (e.key === "Escape") {
      cancelNote();
    }
  });
  box.addEventListener("input", noteTyping);
  $("composer").addEventListener("submit", (e) => { e.preventDefault(); submitMessage(); });
  $("cancel-note").addEventListener("click", cancelNote);
  $("search").addEventListener("input", applySearch);
  $("mute-group").addEventListener("click", () => {
    const g = currentGroup();
    if (g) attempt("group.notify", { group: g.id, muted: !g.muted },
      g.muted ? "notifications on for this group" : "no notifications from this group");
  });
  $("show-groups").addEventListener("click", () => showView("groups"));
  $("show-members").addEventListener("click", () => showView("members"));
  $("close-members").addEventListener("click", () => showView("chat"));
}

document.addEventListener("DOMContentLoaded", () => {
  setUpConversation();
  setUpPanels();
  setUpNotifications();
  watchOnVisibility();
  updateBanner();
  connect();
});
