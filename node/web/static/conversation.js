/* Kith's browser client: drawing the conversation (app.js has the rest).
 *
 * renderConversation() redraws the watched group's whole log from state.log on each
 * "log" push: a message is an <article> with its quote (replies), author, time,
 * marks (edited, pinned, delivery and read), text (mentions as their own spans),
 * file, reactions and actions; membership events are one line of text. Pinned
 * messages and gap lines ("N events from X not yet received") go above it, who is
 * typing below it. An open emoji picker and the focused button survive a redraw.
 * Search hides the messages that do not contain the words typed, on the page.
 */
"use strict";

const QUICK_EMOJI = ["👍", "❤️", "😂", "🎉", "😮", "😢", "🙏", "👀"];
const MENTION = /@([^\s@,;:!?.()[\]{}<>"']+)/g;

function timeText(when) {
  if (when === null || when === undefined) return "--:--";
  return new Date(when * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/* The text as nodes, with @mentions of members in their own <span class="mention">. */
function textWithMentions(text) {
  const names = new Set();
  for (const m of state.members) { names.add(m.name.toLowerCase()); names.add(m.short_id); }
  const frag = document.createDocumentFragment();
  let last = 0;
  for (const match of text.matchAll(MENTION)) {
    if (!names.has(match[1].toLowerCase())) continue;
    frag.append(document.createTextNode(text.slice(last, match.index)));
    frag.append(el("span", "mention", match[0]));
    last = match.index + match[0].length;
  }
  frag.append(document.createTextNode(text.slice(last)));
  return frag;
}

function deliveryMark(view) {
  const names = view.read_by_names || [];
  if (names.length) return `✓✓ read by ${names.join(", ")}`;
  return { pending: "◌ pending", sent: "✓ sent", delivered: "✓✓ delivered" }[view.state]
    || view.state || "";
}

function messageElement(view) {
  const mine = Boolean(view.mine);
  const item = el("article", "msg");
  item.dataset.id = view.id;
  item.classList.toggle("mine", mine);
  item.classList.toggle("mentions-me", Boolean(view.mentions_me));
  if (view.reply_preview) {
    const p = view.reply_preview;
    item.append(el("blockquote", "quote",
      `${p.author_name}: ${p.deleted || p.text === null ? "(deleted)" : p.text}`));
  } else if (view.reply_to) {
    item.append(el("blockquote", "quote", "a reply to a message not shown here"));
  }
  const head = el("div", "msg-head");
  head.append(el("span", "author", view.author_name || "?"));
  if (isVerified(view.author)) head.append(el("span", "verified-mark", "✔"));
  head.append(el("time", "when", timeText(view.time)));
  if (view.edited) {
    const edited = el("span", "marks", "(edited)");
    edited.title = "Earlier: " + (view.edits || []).map((e) => e.text).join(" → ");
    head.append(edited);
  }
  if (view.pinned) head.append(el("span", "marks", "📌 pinned"));
  if (mine) head.append(el("span", "delivery", deliveryMark(view)));
  item.append(head);
  if (view.deleted) {
    item.classList.add("deleted");
    item.append(el("p", "text", `message deleted by ${view.deleted_by || "?"}`));
    return item;
  }
  if (view.text === null || view.text === undefined) {
    item.append(el("p", "text muted-text", "cannot decrypt: sent before you joined"));
  } else if (view.text || !view.file) {
    const body = el("p", "text");
    body.append(textWithMentions(view.text));
    item.append(body);
  }
  if (view.file) item.append(fileElement(view));
  item.append(reactionsElement(view), actionsElement(view));
  return item;
}

function reactionsElement(view) {
  const box = el("div", "reactions");
  const myName = state.me ? state.me.name : "";
  for (const [emoji, names] of Object.entries(view.reactions || {})) {
    if (!names.length) continue;
    const mine = names.includes(myName);
    const chip = button(`${emoji} ${names.length}`, () => react(view, emoji, mine), "chip");
    chip.title = names.join(", ");
    chip.setAttribute("aria-label", `${emoji} from ${names.join(", ")}`);
    chip.setAttribute("aria-pressed", String(mine));
    box.append(chip);
  }
  return box;
}

function actionsElement(view) {
  const box = el("div", "actions");
  const picker = el("div", "picker");
  picker.hidden = state.pickerFor !== view.id; // stays open when the log is redrawn
  for (const emoji of QUICK_EMOJI) {
    const mine = ((view.reactions || {})[emoji] || []).includes(state.me && state.me.name);
    const b = button(emoji, () => { state.pickerFor = null; react(view, emoji, mine); });
    b.setAttribute("aria-label", `React with ${emoji}`);
    picker.append(b);
  }
  box.append(button("Reply", () => startReply(view)));
  box.append(button("React", () => {
    picker.hidden = !picker.hidden;
    state.pickerFor = picker.hidden ? null : view.id;
  }));
  const admin = ADMIN_ROLES.includes(myRole());
  if (view.mine) box.append(button("Edit", () => startEdit(view)));
  if (view.mine || admin) box.append(button("Delete", () => deleteMessage(view)));
  if (admin) box.append(button(view.pinned ? "Unpin" : "Pin", () => pinMessage(view)));
  box.append(picker);
  return box;
}

function infoElement(view) {
  const line = el("p", "info");
  line.append(el("time", "when", timeText(view.time)), document.createTextNode(
    ` ${view.info || view.kind || "event"}`));
  return line;
}

/* Which message button has the focus, to give it back after a redraw. */
function focusedAction() {
  const active = document.activeElement;
  const item = active && active.closest ? active.closest("#log [data-id]") : null;
  return item && active.tagName === "BUTTON"
    ? { id: item.dataset.id, label: active.getAttribute("aria-label") || active.textContent }
    : null;
}

function restoreFocus(focus) {
  if (!focus) return;
  const item = $("log").querySelector(`[data-id="${CSS.escape(focus.id)}"]`);
  const again = item && [...item.querySelectorAll("button")].find(
    (b) => (b.getAttribute("aria-label") || b.textContent) === focus.label);
  if (again) again.focus();
}

function renderConversation() {
  const log = $("log");
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  const focus = focusedAction();
  log.replaceChildren();
  if (!state.current) {
    log.append(el("p", "hint", state.groups.length ? "Choose a group."
      : "No groups yet. Create one with “New group”, or wait to be added."));
  }
  for (const view of state.log) {
    log.append(view.kind === "message" ? messageElement(view) : infoElement(view));
  }
  renderPinnedAndGaps();
  renderTyping();
  applySearch();
  restoreFocus(focus);
  if (atBottom || !state.log.length) log.scrollTop = log.scrollHeight;
}

function renderPinnedAndGaps() {
  const g = currentGroup();
  const list = $("pinned");
  list.replaceChildren();
  const byId = new Map(state.log.map((v) => [v.id, v]));
  for (const id of g ? g.pinned || [] : []) {
    const view = byId.get(id);
    if (!view) continue;
    const item = el("li");
    item.append(button(`📌 ${view.author_name}: ${view.text || "(a file)"}`,
      () => scrollToMessage(id), "link"));
    list.append(item);
  }
  for (const [who, n] of Object.entries(g ? g.missing || {} : {})) {
    if (n > 0) list.append(el("li", "gap", `… ${n} event(s) from ${who} not yet received`));
  }
  list.hidden = !list.children.length;
}

function scrollToMessage(id) {
  const item = $("log").querySelector(`[data-id="${CSS.escape(id)}"]`);
  if (item) { item.scrollIntoView({ block: "center" }); item.classList.add("flash"); }
}

function renderTyping() {
  const names = state.typing.filter((n) => !state.me || n !== state.me.name);
  $("typing").textContent = names.length
    ? `${names.join(", ")} ${names.length === 1 ? "is" : "are"} typing…` : "";
}

/* Client-side search: hide the messages that do not contain the words typed. */
function applySearch() {
  const words = $("search").value.toLowerCase().split(/\s+/).filter(Boolean);
  let shown = 0;
  for (const item of $("log").querySelectorAll(".msg, .info")) {
    const hit = words.every((w) => item.textContent.toLowerCase().includes(w));
    item.hidden = Boolean(words.length) && !hit;
    if (words.length && hit) shown++;
  }
  $("search-count").textContent = words.length ? `${shown} found` : "";
}
