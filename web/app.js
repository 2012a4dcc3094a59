// chatd's web client: plain JavaScript, the native WebSocket protocol and
// the REST API only. Everything a user or the server wrote is put in the
// page as text (textContent), never as HTML.

const API = "/api/chat-api";
const $ = (id) => document.getElementById(id);

const state = {
  token: localStorage.getItem("chatd.token") || "",
  me: null,
  ws: null,
  /** Reconnect delay (ms), doubled per failure up to 15 s. */
  backoff: 500,
  /** room -> conversation (see conversation()) */
  convs: new Map(),
  /** user id -> user */
  users: new Map(),
  active: null,
  /** client_msg_id -> { room, content, attachments, state } */
  pending: new Map(),
  /** files uploaded for the next message: { file, view?, failed? } */
  staged: [],
  lastTypingSent: 0,
  /** url -> Promise<object URL> of files read with the token */
  blobs: new Map(),
  closing: false,
};

// ---------------------------------------------------------------- REST

async function api(method, path, body) {
  const headers = {};
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const resp = await fetch(API + path, { method, headers, body: payload });
  const text = await resp.text();
  const data = text ? JSON.parse(text) : null;
  if (resp.status === 401 && state.me) logout();
  if (!resp.ok) {
    const message = data && data.error ? data.error.message : `HTTP ${resp.status}`;
    throw new Error(message);
  }
  return data;
}

async function uploadFile(file) {
  const name = encodeURIComponent(file.name || "pasted-image");
  const resp = await fetch(`${API}/files?name=${name}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${state.token}` },
    body: file,
  });
  const data = await resp.json().catch(() => null);
  if (!resp.ok) throw new Error(data && data.error ? data.error.message : `HTTP ${resp.status}`);
  return data;
}

/** A file the page may only read with the token, as an object URL. */
function blobUrl(url) {
  if (!state.blobs.has(url)) {
    const p = fetch(url, { headers: { Authorization: `Bearer ${state.token}` } })
      .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(`HTTP ${r.status}`))))
      .then((b) => URL.createObjectURL(b));
    p.catch(() => state.blobs.delete(url));
    state.blobs.set(url, p);
  }
  return state.blobs.get(url);
}

// ---------------------------------------------------------------- auth

let signingUp = false;

function showAuth() {
  $("app").hidden = true;
  $("auth").hidden = false;
  $("auth-username").focus();
}

function toggleAuthMode() {
  signingUp = !signingUp;
  $("auth-display-row").hidden = !signingUp;
  $("auth-submit").textContent = signingUp ? "Sign up" : "Log in";
  $("auth-toggle").textContent = signingUp ? "Have an account? Log in" : "No account? Sign up";
  $("auth-mode-text").textContent = signingUp ? "Create an account." : "Log in to chat.";
  $("auth-password").autocomplete = signingUp ? "new-password" : "current-password";
  $("auth-error").textContent = "";
}

async function submitAuth(ev) {
  ev.preventDefault();
  const username = $("auth-username").value.trim();
  const password = $("auth-password").value;
  $("auth-error").textContent = "";
  try {
    if (signingUp) {
      const display_name = $("auth-display").value.trim() || username;
      await api("POST", "/auth/register", { username, password, display_name });
    }
    const login = await api("POST", "/auth/login", { username, password });
    state.token = login.token;
    localStorage.setItem("chatd.token", login.token);
    $("auth-password").value = "";
    await start();
  } catch (e) {
    $("auth-error").textContent = e.message;
  }
}

function logout() {
  // The token's session ends on the server too (best effort: the page
  // forgets the token either way).
  if (state.token && state.me) api("POST", "/auth/logout").catch(() => {});
  state.closing = true;
  if (state.ws) state.ws.close(1000);
  state.ws = null;
  state.token = "";
  state.me = null;
  localStorage.removeItem("chatd.token");
  state.convs.clear();
  state.pending.clear();
  state.active = null;
  if (signingUp) toggleAuthMode();
  showAuth();
}

// ---------------------------------------------------------------- model

function conversation(room, kind, name) {
  let c = state.convs.get(room);
  if (!c) {
    c = {
      room,
      kind,
      name,
      members: [],
      unread: 0,
      /** event id -> message */
      messages: new Map(),
      /** highest seq seen (for since_seq after a reconnect) */
      lastSeq: 0,
      /** lowest seq loaded (for scroll-back) */
      oldestSeq: null,
      hasMore: true,
      loaded: false,
      loadingOlder: false,
      typing: new Map(),
    };
    state.convs.set(room, c);
  }
  if (name) c.name = name;
  return c;
}

function userName(id) {
  const u = state.users.get(id);
  return u ? u.display_name : id === "server" ? "server" : id;
}

function dmName(c) {
  const other = c.members.find((m) => m !== state.me.id);
  return other ? userName(other) : c.name;
}

function publicRooms() {
  try {
    const saved = JSON.parse(localStorage.getItem("chatd.rooms") || "[]");
    return Array.isArray(saved) && saved.length ? saved : ["general"];
  } catch {
    return ["general"];
  }
}

function savePublicRooms() {
  const rooms = [...state.convs.values()].filter((c) => c.kind === "public").map((c) => c.room);
  localStorage.setItem("chatd.rooms", JSON.stringify(rooms));
}

/** Adds or updates a stored or live chat envelope; true if it was new. */
function addMessage(env) {
  const c = state.convs.get(env.room);
  if (!c) return false;
  if (env.seq) {
    c.lastSeq = Math.max(c.lastSeq, env.seq);
    c.oldestSeq = c.oldestSeq === null ? env.seq : Math.min(c.oldestSeq, env.seq);
  }
  if (c.messages.has(env.id)) return false;
  c.messages.set(env.id, {
    id: env.id,
    seq: env.seq || 0,
    from: env.from,
    content: env.data.content || "",
    attachments: env.data.attachments || [],
    at: env.timestamp,
    state: "acked",
  });
  return true;
}

// ---------------------------------------------------------------- socket

function send(msg) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify(msg));
    return true;
  }
  return false;
}

function setConn(text) {
  const el = $("conn-state");
  el.textContent = text;
  el.className = `conn ${text}`;
}

function connect() {
  state.closing = false;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/api/chat-api/ws?token=${encodeURIComponent(state.token)}`);
  state.ws = ws;
  ws.onopen = () => {
    state.backoff = 500;
    setConn("online");
    for (const c of state.convs.values()) join(c);
  };
  ws.onmessage = (ev) => {
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    onMessage(msg);
  };
  ws.onclose = () => {
    if (state.ws !== ws) return;
    state.ws = null;
    for (const c of state.convs.values()) c.joined = false;
    // What was sent and not acked may or may not have arrived: the user
    // retries it (same client_msg_id, so never twice).
    for (const [id, p] of state.pending) {
      if (p.state === "sending") failPending(id);
    }
    if (state.closing) return;
    setConn("reconnecting");
    const delay = state.backoff;
    state.backoff = Math.min(state.backoff * 2, 15000);
    setTimeout(async () => {
      if (state.closing || state.ws) return;
      try {
        await api("GET", "/me");
      } catch {
        if (!state.me) return;
      }
      if (state.me && !state.ws) connect();
    }, delay);
  };
}

/**
 * Joins `c`'s room, catching up from the last `seq` we have. `fromStart`:
 * a conversation we were just told of (a new DM, added to a group) replays
 * what was sent in it before our join, so its first messages are not missed.
 */
function join(c, fromStart = false) {
  const msg = { type: "join", room: c.room };
  if (c.lastSeq > 0 || fromStart) msg.data = { since_seq: c.lastSeq };
  send(msg);
}

function requestHistory(c, before) {
  const data = { limit: 30 };
  if (before) data.before_seq = before;
  c.loadingOlder = true;
  send({ type: "history", room: c.room, data });
}

function onMessage(msg) {
  const room = msg.room;
  switch (msg.type) {
    case "chat": {
      const c = state.convs.get(room);
      if (!c) return;
      if (addMessage(msg)) {
        if (room !== state.active && msg.from !== state.me.id) c.unread += 1;
        c.typing.delete(msg.from);
        renderSidebar();
        if (room === state.active) renderMessages();
      }
      break;
    }
    case "ack": {
      const p = state.pending.get(msg.data.client_msg_id);
      if (!p) return;
      state.pending.delete(msg.data.client_msg_id);
      const c = state.convs.get(p.room);
      if (c && !c.messages.has(msg.data.id)) {
        c.messages.set(msg.data.id, {
          id: msg.data.id,
          seq: msg.data.seq,
          from: state.me.id,
          content: p.content,
          attachments: p.attachmentViews,
          at: msg.timestamp,
          state: "acked",
        });
      }
      if (c) c.lastSeq = Math.max(c.lastSeq, msg.data.seq);
      if (p.room === state.active) renderMessages();
      break;
    }
    case "history": {
      const c = state.convs.get(room);
      if (!c) return;
      const list = msg.data.messages || [];
      const first = !c.loaded;
      for (const env of list) addMessage(env);
      c.loaded = true;
      c.loadingOlder = false;
      c.hasMore = list.length > 0 && Math.min(...list.map((m) => m.seq || 1)) > 1;
      if (room === state.active) renderMessages(first ? "bottom" : "older");
      break;
    }
    case "system":
      onSystem(msg);
      break;
    case "presence": {
      if (Array.isArray(msg.data.online)) {
        // A summary of a join/leave storm: several clients at once.
        for (const id of msg.data.online) {
          const u = state.users.get(id);
          if (u) u.online = true;
        }
        if (msg.data.offline.length || msg.data.more) refreshUsers();
        renderSidebar();
        break;
      }
      const u = state.users.get(msg.from);
      if (u) {
        u.online = msg.data.status === "online" ? true : u.online;
        if (msg.data.status === "offline") refreshUsers();
        renderSidebar();
      } else {
        refreshUsers();
      }
      break;
    }
    case "typing": {
      const c = state.convs.get(room);
      if (!c || msg.from === state.me.id) return;
      clearTimeout(c.typing.get(msg.from));
      c.typing.set(msg.from, setTimeout(() => {
        c.typing.delete(msg.from);
        renderTyping();
      }, 4000));
      renderTyping();
      break;
    }
    case "notification":
      onNotification(msg);
      break;
    case "error":
      if (msg.data.client_msg_id && state.pending.has(msg.data.client_msg_id)) {
        failPending(msg.data.client_msg_id, msg.data.message);
      } else {
        console.warn("chatd:", msg.data.code, msg.data.message);
      }
      break;
    default:
      break;
  }
}

function onSystem(msg) {
  const c = msg.room ? state.convs.get(msg.room) : null;
  switch (msg.data.event) {
    case "joined":
      if (!c) return;
      c.joined = true;
      if (c.room === state.active && !c.loaded) requestHistory(c);
      break;
    case "recovered":
      if (!c) return;
      if (!msg.data.recovered) {
        // Too much was missed: start again from the newest page.
        c.messages.clear();
        c.oldestSeq = null;
        c.loaded = false;
        if (c.room === state.active) requestHistory(c);
      }
      if (c.room === state.active) renderMessages();
      break;
    case "removed":
      if (c) {
        state.convs.delete(c.room);
        if (state.active === c.room) openRoom(null);
        renderSidebar();
      }
      break;
    default:
      break;
  }
}

async function onNotification(msg) {
  const d = msg.data || {};
  if (d.event === "group_added" || d.event === "dm_created") {
    await refreshConversations(true);
  } else if (d.event === "group_removed" && d.conversation) {
    state.convs.delete(d.conversation);
    if (state.active === d.conversation) openRoom(null);
    renderSidebar();
  }
}

// ---------------------------------------------------------------- sending

function newClientMsgId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return `c-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

function sendPending(id) {
  const p = state.pending.get(id);
  const data = { content: p.content };
  if (p.attachmentViews.length) data.attachments = p.attachmentViews.map((a) => ({ file_id: a.id }));
  p.state = "sending";
  p.error = "";
  if (!send({ type: "chat", room: p.room, client_msg_id: id, data })) {
    failPending(id, "not connected");
    return;
  }
  clearTimeout(p.timer);
  p.timer = setTimeout(() => {
    if (state.pending.get(id) === p && p.state === "sending") failPending(id, "no answer");
  }, 15000);
  if (p.room === state.active) renderMessages("bottom");
}

function failPending(id, why) {
  const p = state.pending.get(id);
  if (!p) return;
  clearTimeout(p.timer);
  p.state = "failed";
  p.error = why || "";
  if (p.room === state.active) renderMessages();
}

async function submitMessage(ev) {
  ev.preventDefault();
  const c = state.convs.get(state.active);
  if (!c) return;
  const content = $("composer-text").value.trim();
  if (state.staged.some((s) => !s.view && !s.failed)) return; // still uploading
  const views = state.staged.filter((s) => s.view).map((s) => s.view);
  if (!content && !views.length) return;
  const id = newClientMsgId();
  state.pending.set(id, { room: c.room, content, attachmentViews: views, state: "sending", at: new Date().toISOString() });
  $("composer-text").value = "";
  state.staged = [];
  renderStaged();
  sendPending(id);
}

function stageFiles(files) {
  for (const file of files) {
    const entry = { file };
    state.staged.push(entry);
    uploadFile(file)
      .then((view) => { entry.view = view; })
      .catch((e) => { entry.failed = e.message; })
      .finally(renderStaged);
  }
  renderStaged();
}

function onTyping() {
  const now = Date.now();
  if (state.active && now - state.lastTypingSent > 2000) {
    state.lastTypingSent = now;
    send({ type: "typing", room: state.active });
  }
}

// ---------------------------------------------------------------- render

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function renderSidebar() {
  const lists = { public: $("list-public"), group: $("list-groups"), dm: $("list-dms") };
  for (const ul of Object.values(lists)) ul.replaceChildren();
  for (const c of state.convs.values()) {
    const ul = lists[c.kind];
    if (!ul) continue;
    const li = el("li", c.room === state.active ? "conv active" : "conv");
    li.dataset.room = c.room;
    if (c.kind === "dm") {
      const other = c.members.find((m) => m !== state.me.id);
      const u = state.users.get(other);
      li.append(el("span", u && u.online ? "dot on" : "dot"));
    }
    li.append(el("span", "name", c.kind === "public" ? `# ${c.room}` : c.kind === "dm" ? dmName(c) : c.name));
    if (c.unread) li.append(el("span", "badge unread", String(c.unread)));
    li.onclick = () => openRoom(c.room);
    ul.append(li);
  }
  const users = $("list-users");
  users.replaceChildren();
  for (const u of [...state.users.values()].sort((a, b) => a.display_name.localeCompare(b.display_name))) {
    if (u.id === state.me.id) continue;
    const li = el("li", "user");
    li.dataset.userId = u.id;
    li.title = `Message ${u.display_name}`;
    li.append(el("span", u.online ? "dot on" : "dot"), el("span", "name", u.display_name));
    li.onclick = () => startDm(u.id);
    users.append(li);
  }
}

function formatTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function formatSize(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function renderAttachments(list) {
  const box = el("div", "atts");
  for (const a of list) {
    if (a.thumbnail_url && a.content_type.startsWith("image/")) {
      const img = el("img", "att-img");
      img.alt = a.name;
      img.title = a.name;
      if (a.width && a.height) {
        const scale = Math.min(1, 240 / Math.max(a.width, a.height));
        img.width = Math.round(a.width * scale);
        img.height = Math.round(a.height * scale);
      }
      blobUrl(a.thumbnail_url).then((u) => { img.src = u; }).catch(() => { img.alt = `${a.name} (unavailable)`; });
      img.onclick = () => blobUrl(a.url).then((u) => window.open(u, "_blank", "noopener"));
      box.append(img);
    } else {
      const link = el("a", "att-file", `${a.name} (${formatSize(a.size)})`);
      link.href = "#";
      link.onclick = (ev) => {
        ev.preventDefault();
        blobUrl(a.url).then((u) => {
          const save = el("a");
          save.href = u;
          save.download = a.name;
          save.click();
        });
      };
      box.append(link);
    }
  }
  return box;
}

function renderOne(m, pendingId) {
  const mine = m.from === state.me.id;
  const div = el("div", mine ? "msg mine" : "msg");
  if (m.id) div.dataset.id = m.id;
  if (pendingId) div.dataset.clientMsgId = pendingId;
  const meta = el("div", "meta");
  meta.append(el("span", "from", userName(m.from)), el("time", "at", formatTime(m.at)));
  if (mine) {
    const st = el("span", `state ${m.state}`);
    st.textContent = m.state === "acked" ? `✓ #${m.seq}` : m.state === "failed" ? `failed${m.error ? `: ${m.error}` : ""}` : "sending…";
    meta.append(st);
    if (m.state === "failed") {
      const retry = el("button", "small retry", "Retry");
      retry.type = "button";
      retry.onclick = () => sendPending(pendingId);
      meta.append(retry);
    }
  }
  div.append(meta);
  if (m.content) div.append(el("div", "body", m.content));
  if (m.attachments && m.attachments.length) div.append(renderAttachments(m.attachments));
  return div;
}

/**
 * Redraws the active room. `scroll`: "bottom" (opened, or the user sent
 * something), "older" (a page was added above: what was in view stays),
 * or, by default, "follow" (stay at the bottom if the view was there,
 * else stay where the user scrolled to).
 */
function renderMessages(scroll = "follow") {
  const box = $("messages");
  const c = state.convs.get(state.active);
  if (!c) {
    box.replaceChildren();
    return;
  }
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const fromBottom = box.scrollHeight - box.scrollTop;
  const top = box.scrollTop;
  const list = [...c.messages.values()].sort((a, b) => a.seq - b.seq);
  const nodes = [];
  if (c.loaded && c.hasMore) {
    const more = el("button", "small history-more", "Load older messages");
    more.type = "button";
    more.onclick = () => loadOlder(c);
    nodes.push(more);
  }
  for (const m of list) nodes.push(renderOne(m));
  for (const [id, p] of state.pending) {
    if (p.room !== c.room) continue;
    nodes.push(renderOne({ from: state.me.id, content: p.content, attachments: p.attachmentViews, at: p.at, state: p.state, error: p.error }, id));
  }
  box.replaceChildren(...nodes);
  if (scroll === "older") box.scrollTop = box.scrollHeight - fromBottom;
  else if (scroll === "bottom" || atBottom) box.scrollTop = box.scrollHeight;
  else box.scrollTop = top;
}

function renderTyping() {
  const c = state.convs.get(state.active);
  const who = c ? [...c.typing.keys()].map(userName) : [];
  $("typing").textContent = who.length ? `${who.join(", ")} ${who.length > 1 ? "are" : "is"} typing…` : "";
}

function renderStaged() {
  const box = $("pending-files");
  box.replaceChildren(
    ...state.staged.map((s) => {
      const label = s.failed ? `${s.file.name || "image"}: ${s.failed}` : s.view ? s.view.name : `uploading ${s.file.name || "image"}…`;
      return el("span", s.failed ? "chip failed" : "chip", label);
    }),
  );
}

function loadOlder(c) {
  if (!c.loadingOlder && c.hasMore && c.oldestSeq) requestHistory(c, c.oldestSeq);
}

// ---------------------------------------------------------------- navigation

function openRoom(room) {
  state.active = room;
  const c = room ? state.convs.get(room) : null;
  $("app").classList.toggle("in-room", Boolean(c));
  $("composer").hidden = !c;
  $("member-form").hidden = !(c && c.kind === "group" && c.owner === state.me.id);
  $("room-title").textContent = c ? (c.kind === "public" ? `# ${c.room}` : c.kind === "dm" ? dmName(c) : c.name) : "Pick a conversation";
  if (c) {
    c.unread = 0;
    if (!c.loaded && c.joined) requestHistory(c);
    renderMemberSelect(c);
    $("composer-text").focus();
  }
  renderSidebar();
  renderMessages("bottom");
  renderTyping();
}

function renderMemberSelect(c) {
  const select = $("member-select");
  select.replaceChildren();
  for (const u of state.users.values()) {
    if (c.members.includes(u.id)) continue;
    const o = el("option", "", u.display_name);
    o.value = u.id;
    select.append(o);
  }
}

async function startDm(userId) {
  try {
    const dm = await api("POST", `/dm/${encodeURIComponent(userId)}`);
    addConversation(dm);
    openRoom(dm.id);
  } catch (e) {
    alert(e.message);
  }
}

function addConversation(v, fresh = false) {
  const known = state.convs.has(v.id);
  const c = conversation(v.id, v.kind === "dm" ? "dm" : "group", v.name);
  c.members = v.members || [];
  c.owner = v.owner;
  if (!c.joined) join(c, fresh && !known);
  renderSidebar();
  return c;
}

async function refreshUsers() {
  const users = await api("GET", "/users");
  state.users = new Map(users.map((u) => [u.id, u]));
  renderSidebar();
}

/** `fresh`: conversations not seen before are new ones (see join). */
async function refreshConversations(fresh = false) {
  const list = await api("GET", "/conversations");
  for (const v of list) addConversation(v, fresh);
  renderSidebar();
}

// ---------------------------------------------------------------- start

async function start() {
  try {
    state.me = await api("GET", "/me");
  } catch {
    state.token = "";
    localStorage.removeItem("chatd.token");
    showAuth();
    return;
  }
  $("auth").hidden = true;
  $("app").hidden = false;
  $("me-name").textContent = state.me.display_name;
  for (const r of publicRooms()) conversation(r, "public");
  await refreshUsers();
  await refreshConversations();
  connect();
  const first = state.convs.keys().next().value;
  openRoom(first || null);
}

function wire() {
  $("auth-form").addEventListener("submit", submitAuth);
  $("auth-toggle").addEventListener("click", toggleAuthMode);
  $("btn-logout").addEventListener("click", logout);
  $("composer").addEventListener("submit", submitMessage);
  $("composer-text").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) {
      ev.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("composer-text").addEventListener("input", onTyping);
  $("composer-text").addEventListener("paste", (ev) => {
    const files = [...(ev.clipboardData ? ev.clipboardData.files : [])];
    if (files.length) {
      ev.preventDefault();
      stageFiles(files);
    }
  });
  $("file-input").addEventListener("change", (ev) => {
    stageFiles([...ev.target.files]);
    ev.target.value = "";
  });
  $("messages").addEventListener("scroll", () => {
    const c = state.convs.get(state.active);
    if (c && $("messages").scrollTop < 30) loadOlder(c);
  });
  $("btn-add-room").addEventListener("click", () => {
    $("room-form").hidden = !$("room-form").hidden;
    $("room-name").focus();
  });
  $("room-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const name = $("room-name").value.trim();
    if (!/^[A-Za-z0-9_.@-]{1,64}$/.test(name)) return;
    const c = conversation(name, "public");
    savePublicRooms();
    join(c);
    $("room-name").value = "";
    $("room-form").hidden = true;
    openRoom(name);
  });
  $("btn-new-group").addEventListener("click", () => {
    $("group-form").hidden = !$("group-form").hidden;
    $("group-name").focus();
  });
  $("group-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const name = $("group-name").value.trim();
    if (!name) return;
    try {
      const g = await api("POST", "/groups", { name });
      $("group-name").value = "";
      $("group-form").hidden = true;
      addConversation(g);
      openRoom(g.id);
    } catch (e) {
      alert(e.message);
    }
  });
  $("member-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const c = state.convs.get(state.active);
    const user_id = $("member-select").value;
    if (!c || !user_id) return;
    try {
      const g = await api("POST", `/groups/${c.room}/members`, { user_id });
      c.members = g.members || c.members;
      renderMemberSelect(c);
    } catch (e) {
      alert(e.message);
    }
  });
  $("btn-back").addEventListener("click", () => openRoom(null));
  // Presence of users who are in no shared room: refreshed now and then.
  setInterval(() => { if (state.me) refreshUsers().catch(() => {}); }, 30000);
}

wire();
if (state.token) start();
else showAuth();
