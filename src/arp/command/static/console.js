// ARP console: agent runs and the agents' history, over command mode's HTTP API.
//
// Plain DOM, no framework, no build step. Pages are hash routes (#/runs, #/new, #/run/<id>,
// #/history/<agent>, #/history/<agent>/<session>), so links and reloads work through the relay,
// which remembers the token in its cookie. Nothing is ever built from HTML strings: text goes in
// with textContent (the page's CSP enforces Trusted Types, so innerHTML would throw).

import { cockpit } from "./cockpit.js";
import { pushAvailable, renewPush, subscribePush } from "./push.js";

// The agents come from the executors table (GET /api/agents, read once at start); these are
// used only when that request fails, so the console still opens.
let AGENTS = ["claude", "codex", "gemini"];
let AGENT_NAMES = { claude: "Claude", codex: "Codex", gemini: "Gemini" };
// name → {found, path, version, install} from GET /api/agents (empty: nothing known, all offered).
let AGENT_INFO = {};
const AGENTS_TIMEOUT_MS = 5000;
const MODELS = {
  claude: ["sonnet", "opus", "haiku"],
  codex: ["gpt-5-codex", "gpt-5"],
  gemini: ["gemini-2.5-pro", "gemini-2.5-flash"],
};
const PERMISSION_MODES = [
  ["ask", "Ask me (approve each tool use)"],
  ["default", "Default (deny what needs asking)"],
  ["acceptEdits", "Accept edits"],
  ["plan", "Plan / read-only"],
  ["bypassPermissions", "Bypass permissions"],
];
const REQUEST_TIMEOUT_MS = 20000;
const INBOX_POLL_MS = 4000; // the header's count of approvals waiting, on every page
const RUNS_POLL_MS = 4000;
const RECONNECT_FIRST_MS = 500;
const RECONNECT_MAX_MS = 8000;
const HISTORY_PAGE = 200;
const KEEP_EVENTS = 2000; // a run's page keeps its newest events; older ones on request
const EARLIER_PAGE = 500;
const MAX_EVENTS_SHOWN = 5000; // however many earlier pages are asked for
const MAX_OPEN_CALLS = 1000; // tool calls still waiting for their result
const SEARCH_LIMIT = 1000;
const PROJECT_PAGE = 50;
const MAX_HITS = 100;
const LIVE_LABELS = {
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  ended: "finished",
};

// --- small DOM helpers ------------------------------------------------------------------------

/** Builds an element: attrs (class, text, on<event>, data-*, aria-*, other attributes), children. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "value") el.value = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const $ = (selector, root = document) => root.querySelector(selector);

// --- formatting ---------------------------------------------------------------------------------

function parseTime(value) {
  if (value === null || value === undefined) return null;
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

function ago(date) {
  const seconds = Math.round((Date.now() - date.getTime()) / 1000);
  if (seconds < 45) return "just now";
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 24) return `${hours} h ago`;
  const days = Math.round(hours / 24);
  if (days < 14) return `${days} d ago`;
  return date.toLocaleDateString();
}

/** A <time> showing "3 min ago" (or the clock time with `clock`), the full date on hover. */
function timeEl(value, { clock = false } = {}) {
  const date = parseTime(value);
  if (!date) return null;
  const text = clock
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : ago(date);
  return h("time", { datetime: date.toISOString(), title: date.toLocaleString(), text });
}

function duration(start, end) {
  const a = parseTime(start);
  const b = parseTime(end) || new Date();
  if (!a) return null;
  const s = Math.max(0, Math.round((b - a) / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
const number = (n) => (typeof n === "number" ? n.toLocaleString() : null);

function tokensText(usage) {
  if (!usage) return null;
  const parts = [];
  if (typeof usage.input_tokens === "number") parts.push(`${number(usage.input_tokens)} in`);
  if (typeof usage.output_tokens === "number") parts.push(`${number(usage.output_tokens)} out`);
  return parts.length ? parts.join(" · ") : null;
}

function costText(cost) {
  if (typeof cost !== "number") return null;
  return cost < 0.01 ? `$${cost.toFixed(4)}` : `$${cost.toFixed(2)}`;
}

function firstLine(text, max = 160) {
  const line = String(text || "").trim().split("\n").find((l) => l.trim()) || "";
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

function compactJson(value, max = 120) {
  let text;
  if (value && typeof value === "object") {
    const keys = Object.keys(value);
    const single = keys.length === 1 ? value[keys[0]] : null;
    text = typeof single === "string" ? single : JSON.stringify(value);
  } else {
    text = typeof value === "string" ? value : JSON.stringify(value);
  }
  text = (text || "").replace(/\s+/g, " ").trim();
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function prettyJson(value) {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

function badge(status) {
  return h("span", { class: `badge ${status}`, "data-status": status, text: status });
}

// --- Markdown (a safe subset, built as DOM) -----------------------------------------------------
//
// Agent output and stored conversations come through here, so the parser has to stay fast on
// any input: the block patterns are anchored and have no quantifiers that overlap, inline spans
// are found by one left-to-right scan that never looks for the same missing closer twice, and
// a line longer than MD_LINE_MAX (or text beyond MD_TEXT_MAX) is shown as it is.

const MD_LINE_MAX = 20000;
const MD_TEXT_MAX = 500000;
const MD_DEPTH_MAX = 8; // nested quotes, and emphasis inside emphasis
const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING = /^\s{0,3}(#{1,6})\s+([\s\S]*)/;
const QUOTE = /^\s{0,3}>\s?/;
const ITEM = /^\s{0,6}([-*+]|\d{1,9}[.)])\s+([\s\S]*)/;
const URL_BODY = /[^\s<>()[\]]*/y;
const URL_TRAILER = ".,;:!?'\"";

const isSpace = (c) => c !== undefined && /\s/.test(c);
const isWord = (c) => c !== undefined && /\w/.test(c);

/** A heading's text without its closing #s (only a run after a space, or the whole text). */
function headingText(text) {
  const trimmed = text.trimEnd();
  let end = trimmed.length;
  while (end > 0 && trimmed[end - 1] === "#") end--;
  const closed = end < trimmed.length && (end === 0 || isSpace(trimmed[end - 1]));
  return (closed ? trimmed.slice(0, end) : trimmed).trim();
}

/** "---", "* * *", "___": three or more of one mark, spaces allowed, indented at most 3. */
function isRule(line) {
  if (line.length - line.trimStart().length > 3) return false;
  return /^([-*_])\1{2,}$/.test(line.replace(/\s+/g, ""));
}

function tableRow(line) {
  let cells = line.trim();
  if (cells.startsWith("|")) cells = cells.slice(1);
  if (cells.endsWith("|")) cells = cells.slice(0, -1);
  return cells.split("|").map((cell) => cell.trim());
}

/** A table's separator line: "|---|:--:|". */
const isTableSep = (line) => tableRow(line).every((cell) => /^:?-{2,}:?$/.test(cell));

/**
 * Finds the closing delimiters of one line's inline spans. The scan only moves forward, and a
 * delimiter with no closer after one point has none after any later point, so each search that
 * fails is made once: the whole line costs a bounded number of passes, whatever it holds.
 */
class Closers {
  constructor(text) {
    this.text = text;
    this.missing = new Map(); // delimiter -> the position from which it was searched in vain
    this.found = new Map(); // single character -> its first position after the last search
    this.runs = null; // backtick run length -> [start positions], built on first use
    this.cursors = new Map();
    this.targets = new Map(); // "]" position -> the link target after it, or null
  }

  /** The first `delim` at or after `from` that follows a non-space, or -1 (for ** __ ~~). */
  emphasis(delim, from) {
    if (this.missing.get(delim) <= from) return -1;
    let j = this.text.indexOf(delim, from);
    while (j >= 0 && isSpace(this.text[j - 1])) j = this.text.indexOf(delim, j + 1);
    if (j < 0) this.missing.set(delim, from);
    return j;
  }

  /** The first `char` at or after `from` (callers ask with growing `from`), or -1. */
  next(char, from) {
    const known = this.found.get(char);
    if (known !== undefined && (known < 0 || known >= from)) return known;
    const j = this.text.indexOf(char, from);
    this.found.set(char, j);
    return j;
  }

  /** Where the next run of exactly `length` backticks starts at or after `from`, or -1. */
  codeCloser(length, from) {
    if (!this.runs) {
      this.runs = new Map();
      const pattern = /`+/g;
      for (let m = pattern.exec(this.text); m; m = pattern.exec(this.text)) {
        if (!this.runs.has(m[0].length)) this.runs.set(m[0].length, []);
        this.runs.get(m[0].length).push(m.index);
      }
    }
    const starts = this.runs.get(length) || [];
    let cursor = this.cursors.get(length) || 0;
    while (cursor < starts.length && starts[cursor] < from) cursor++;
    this.cursors.set(length, cursor);
    return cursor < starts.length ? starts[cursor] : -1;
  }

  /** The link target in "(…)" right after the "]" at `close`: one word, spaces around allowed. */
  linkTarget(close) {
    if (!this.targets.has(close)) {
      let target = null;
      if (this.text[close + 1] === "(") {
        const end = this.next(")", close + 2);
        const url = end < 0 ? "" : this.text.slice(close + 2, end).trim();
        if (url && !/\s/.test(url)) target = { url, end };
      }
      this.targets.set(close, target);
    }
    return this.targets.get(close);
  }
}

/** The inline span that starts at `i`: {node, end}, or {node: null, end} for plain text. */
function inlineSpan(text, i, find, depth) {
  const c = text[i];
  const after = text[i + 1];
  if (c === "`") {
    let run = 1;
    while (text[i + run] === "`") run++;
    const close = find.codeCloser(run, i + run);
    if (close < 0) return { node: null, end: i + run };
    let body = text.slice(i + run, close);
    if (body.length > 1 && body.startsWith(" ") && body.endsWith(" ")) body = body.slice(1, -1);
    return { node: h("code", { text: body }), end: close + run };
  }
  if ((c === "*" || c === "_" || c === "~") && after === c && text[i + 2] && !isSpace(text[i + 2])) {
    const close = find.emphasis(c + c, i + 3);
    if (close >= 0) {
      const tag = c === "~" ? "del" : "strong";
      return { node: h(tag, {}, inline(text.slice(i + 2, close), depth + 1)), end: close + 2 };
    }
  }
  if ((c === "*" || c === "_") && after !== undefined && after !== c && !isSpace(after)) {
    const close = text.indexOf(c, i + 1); // the span holds no other `c`: at most the gap is read
    const word = c === "_" && (isWord(text[i - 1]) || isWord(text[close + 1]));
    if (close > i + 1 && !isSpace(text[close - 1]) && !word) {
      return { node: h("em", {}, inline(text.slice(i + 1, close), depth + 1)), end: close + 1 };
    }
  }
  if (c === "[") {
    const close = find.next("]", i + 1);
    const target = close > i + 1 ? find.linkTarget(close) : null;
    if (target) return { node: link(text.slice(i + 1, close), target.url), end: target.end + 1 };
  }
  if (c === "h" && (text.startsWith("http://", i) || text.startsWith("https://", i))) {
    const from = text.indexOf("//", i) + 2;
    URL_BODY.lastIndex = from;
    let end = from + URL_BODY.exec(text)[0].length;
    while (end > from && URL_TRAILER.includes(text[end - 1])) end--;
    if (end > from) return { node: link(text.slice(i, end), text.slice(i, end)), end };
  }
  return { node: null, end: i + 1 };
}

/** Inline Markdown of one line: code, bold, italic, strike-through, links, bare URLs. */
function inline(text, depth = 0) {
  if (depth >= MD_DEPTH_MAX || text.length > MD_LINE_MAX) return [text];
  const out = [];
  const find = new Closers(text);
  let plain = 0; // where the text not yet output starts
  let i = 0;
  while (i < text.length) {
    const span = inlineSpan(text, i, find, depth);
    if (span.node) {
      if (i > plain) out.push(text.slice(plain, i));
      out.push(span.node);
      plain = span.end;
    }
    i = span.end;
  }
  if (plain < text.length) out.push(text.slice(plain));
  return out;
}

function safeHref(url) {
  try {
    const parsed = new URL(url, location.href);
    return ["http:", "https:", "mailto:"].includes(parsed.protocol) ? parsed.href : null;
  } catch {
    return null;
  }
}

function link(text, url) {
  const href = safeHref(url);
  if (!href) return document.createTextNode(text);
  return h("a", { href, target: "_blank", rel: "noopener noreferrer", text });
}

/** A line's text without its trailing spaces (no pattern: a long run of spaces costs nothing). */
function trimSpaces(line) {
  let end = line.length;
  while (end > 0 && line[end - 1] === " ") end--;
  return line.slice(0, end);
}

/** Inline Markdown for a paragraph's lines: a soft break is a space, "  " or "\\" at the end a <br>. */
function inlineLines(lines) {
  const out = [];
  lines.forEach((line, i) => {
    const spaces = line.endsWith("  ");
    const hard = spaces || line.endsWith("\\");
    out.push(inline(spaces ? trimSpaces(line) : hard ? line.slice(0, -1) : line));
    if (i < lines.length - 1) out.push(hard ? h("br") : " ");
  });
  return out;
}

/** Renders Markdown text into a <div class="md">; past MD_TEXT_MAX, the rest is plain text. */
function markdown(text, depth = 0) {
  const root = h("div", { class: "md" });
  let source = String(text ?? "");
  let rest = "";
  if (source.length > MD_TEXT_MAX) {
    const cut = source.lastIndexOf("\n", MD_TEXT_MAX);
    const at = cut > 0 ? cut : MD_TEXT_MAX;
    rest = source.slice(at);
    source = source.slice(0, at);
  }
  const lines = source.replace(/\r\n?/g, "\n").split("\n");
  const long = (line) => line.length > MD_LINE_MAX;
  const quote = (line) => depth < MD_DEPTH_MAX && QUOTE.test(line);
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i++;
      continue;
    }
    if (long(line)) {
      root.append(h("p", { text: line }));
      i++;
      continue;
    }
    const fence = FENCE.exec(line);
    if (fence) {
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trimStart().startsWith(fence[1])) body.push(lines[i++]);
      i++;
      const code = h("code", { text: body.join("\n") });
      if (fence[2]) code.dataset.lang = fence[2];
      root.append(h("pre", {}, code));
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      root.append(h(`h${heading[1].length}`, {}, inline(headingText(heading[2]))));
      i++;
      continue;
    }
    if (isRule(line)) {
      root.append(h("hr"));
      i++;
      continue;
    }
    if (quote(line)) {
      const body = [];
      while (i < lines.length && !long(lines[i]) && quote(lines[i])) {
        body.push(lines[i++].replace(QUOTE, ""));
      }
      root.append(h("blockquote", {}, [...markdown(body.join("\n"), depth + 1).childNodes]));
      continue;
    }
    const row = (at) => at < lines.length && !long(lines[at]) && lines[at].includes("|");
    if (row(i) && row(i + 1) && isTableSep(lines[i + 1])) {
      const head = tableRow(line);
      i += 2;
      const rows = [];
      while (row(i) && lines[i].trim()) rows.push(tableRow(lines[i++]));
      root.append(
        h(
          "table",
          {},
          h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, inline(c))))),
          h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, inline(c)))))),
        ),
      );
      continue;
    }
    const item = ITEM.exec(line);
    if (item) {
      const ordered = /\d/.test(item[1]);
      const list = h(ordered ? "ol" : "ul");
      if (ordered && parseInt(item[1], 10) !== 1) list.setAttribute("start", parseInt(item[1], 10));
      while (i < lines.length && !long(lines[i])) {
        const m = ITEM.exec(lines[i]);
        if (!m || /\d/.test(m[1]) !== ordered) break;
        const body = [m[2]];
        i++;
        // Continuation lines: indented, not a new item or block.
        while (i < lines.length && !long(lines[i]) && /^\s{2,}\S/.test(lines[i]) && !ITEM.test(lines[i])) {
          body.push(lines[i++].trim());
        }
        list.append(h("li", {}, inlineLines(body)));
      }
      root.append(list);
      continue;
    }
    const para = [];
    while (
      i < lines.length &&
      lines[i].trim() &&
      !long(lines[i]) &&
      !FENCE.test(lines[i]) &&
      !HEADING.test(lines[i]) &&
      !quote(lines[i]) &&
      !(para.length && ITEM.test(lines[i]))
    ) {
      para.push(lines[i++]);
    }
    if (!para.length) para.push(lines[i++]);
    root.append(h("p", {}, inlineLines(para)));
  }
  if (rest) root.append(h("pre", { class: "wrap" }, h("code", { text: rest })));
  return root;
}

// --- the API ------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, fromRelay = false) {
    super(message);
    this.status = status;
    this.fromRelay = fromRelay;
  }
}

/**
 * One JSON request. An answer that is not JSON comes from the relay itself (wrong token, client
 * offline): it becomes an ApiError with `fromRelay`, shown in the banner.
 */
async function api(path, { method = "GET", body } = {}) {
  const init = {
    method,
    headers: { Accept: "application/json" },
    credentials: "same-origin",
    cache: "no-store",
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    const why = err && err.name === "TimeoutError" ? "did not answer in time" : "could not be reached";
    throw new ApiError(0, `The relay ${why}. Check your connection and retry.`, true);
  }
  if (response.status === 204) return null;
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("application/json")) {
    const data = await response.json();
    if (!response.ok) {
      // Every face answers errors as {"error": {"status", "code", "message"}}.
      const said = data && data.error && (data.error.message || data.error);
      throw new ApiError(response.status, typeof said === "string" ? said : response.statusText);
    }
    return data;
  }
  const text = (await response.text()).trim().slice(0, 500);
  const said = text || response.statusText;
  throw new ApiError(response.status, `The relay answered ${response.status}: ${said}`, true);
}

const enc = encodeURIComponent;

// Issue 16: attachments on the prompt forms and a run's Changes tab (cockpit.js).
const { AttachPicker, attachmentThumbs, ChangesPanel } = cockpit({ h, api, enc, report });

// --- banner and confirmation ----------------------------------------------------------------------

let retry = null;

function showBanner(message, onRetry) {
  $("#banner-text").textContent = message;
  retry = onRetry || (() => route());
  $("#banner").hidden = false;
}

function hideBanner() {
  $("#banner").hidden = true;
}

/** The text for an empty page: the relay's trouble is in the banner already. */
function unavailable(err) {
  const relay = err instanceof ApiError && err.fromRelay;
  return relay ? "Not available while the client cannot be reached." : err.message;
}

/** Reports an error: relay trouble in the banner, the API's own errors where `target` says. */
function report(err, target) {
  if (err instanceof ApiError && !err.fromRelay && target) {
    target.textContent = err.message;
    target.hidden = false;
    return;
  }
  showBanner(err instanceof Error ? err.message : String(err));
}

function confirmDialog({ title, text, yes }) {
  const dialog = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-yes").textContent = yes;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.showModal();
    $("#confirm-no").focus();
  });
}

// --- theme ----------------------------------------------------------------------------------------

const THEMES = ["auto", "light", "dark"];
const THEME_LABEL = { auto: "follow the system", light: "light", dark: "dark" };
const THEME_ICON = { auto: "◐", light: "☀", dark: "☾" };

function applyTheme(theme) {
  if (theme === "auto") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
  const button = $("#theme");
  button.textContent = THEME_ICON[theme];
  button.title = `Theme: ${THEME_LABEL[theme]}`;
  button.setAttribute("aria-label", button.title);
}

function currentTheme() {
  try {
    const saved = localStorage.getItem("arp-theme");
    return THEMES.includes(saved) ? saved : "auto";
  } catch {
    return "auto";
  }
}

function cycleTheme() {
  const next = THEMES[(THEMES.indexOf(currentTheme()) + 1) % THEMES.length];
  try {
    localStorage.setItem("arp-theme", next);
  } catch {
    /* private mode: the choice lasts until reload */
  }
  applyTheme(next);
}

// --- router ---------------------------------------------------------------------------------------

let cleanup = [];
let generation = 0; // counts page changes, so a page whose data came too late stays away

/** True when the page asked for at `since` is no longer the one shown. */
const stale = (since) => since !== generation;

/** Registers what to stop when the page changes (timers, streams). */
function onLeave(fn) {
  cleanup.push(fn);
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map((part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part; // a mangled link: look it up as typed
    }
  });
  return { parts, params: new URLSearchParams(query) };
}

function setMain(...children) {
  const main = $("#main");
  main.replaceChildren(...children.flat());
  return main;
}

function route() {
  for (const fn of cleanup.splice(0)) {
    try {
      fn();
    } catch (err) {
      console.error(err);
    }
  }
  generation++;
  hideBanner();
  const { parts, params } = parseHash();
  const [section, a, b] = parts;
  for (const tab of document.querySelectorAll(".tabs a")) {
    const current = tab.dataset.nav === (section === "history" ? "history" : "runs");
    if (current) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
  let page;
  if (section === "new") page = newRunPage(params);
  else if (section === "run" && a) page = runPage(a);
  else if (section === "history" && a && !AGENTS.includes(a)) page = unknownAgentPage(a);
  else if (section === "history" && b) page = historySessionPage(a, b);
  else if (section === "history") page = historyPage(a || "claude");
  else page = runsPage();
  page.catch((err) => report(err));
}

function focusMain() {
  const heading = $("#main h1");
  (heading || $("#main")).setAttribute("tabindex", "-1");
  (heading || $("#main")).focus({ preventScroll: true });
}

// --- runs ---------------------------------------------------------------------------------------

function runCard(run) {
  const usage = tokensText(run.usage);
  return h(
    "li",
    {},
    h(
      "a",
      { class: "card run", href: `#/run/${enc(run.session_id)}`, "data-session": run.session_id },
      h(
        "div",
        { class: "card-top" },
        badge(run.status),
        h("span", { class: "chip", text: AGENT_NAMES[run.executor] || run.executor }),
        run.model ? h("span", { class: "chip", text: run.model }) : null,
        h("span", { class: "when" }, timeEl(run.updated_at || run.created_at)),
      ),
      h("div", { class: "card-title", text: firstLine(run.prompt) || "(empty prompt)" }),
      h(
        "div",
        { class: "meta" },
        h("span", { class: "path", text: run.project_path }),
        run.runs > 1 ? h("span", { text: `${run.runs} runs` }) : null,
        usage ? h("span", { text: usage }) : null,
        costText(run.cost_usd) ? h("span", { text: costText(run.cost_usd) }) : null,
      ),
    ),
  );
}

async function runsPage() {
  const list = h("ul", { class: "cards grid", id: "runs", "aria-live": "polite" });
  const empty = h(
    "div",
    { class: "empty", hidden: true },
    h("p", { text: "No agent runs yet on this machine." }),
    h("a", { class: "btn primary", href: "#/new", text: "Start a session" }),
  );
  const more = h("p", { class: "hint", hidden: true });
  setMain(
    h(
      "div",
      { class: "page-head" },
      h("h1", { text: "Agent runs" }),
      notifyButton(),
      h("a", { class: "btn", href: "#/history/claude", text: "Browse history" }),
    ),
    list,
    more,
    empty,
  );
  focusMain();
  let timer = null;
  let stopped = false;
  onLeave(() => {
    stopped = true;
    clearTimeout(timer);
  });
  const load = async () => {
    if (document.hidden) {
      timer = setTimeout(load, RUNS_POLL_MS); // no polling from a background tab
      return;
    }
    try {
      const data = await api("/api/sessions?limit=100");
      if (stopped) return;
      hideBanner();
      list.replaceChildren(...data.sessions.map(runCard));
      empty.hidden = data.sessions.length > 0;
      more.hidden = data.total <= data.sessions.length;
      more.textContent = `The ${data.sessions.length} newest of ${data.total} runs.`;
    } catch (err) {
      if (!stopped) report(err);
    }
    if (!stopped) timer = setTimeout(load, RUNS_POLL_MS);
  };
  await load();
}

// --- new run --------------------------------------------------------------------------------------

async function newRunPage(params) {
  const resume = params.get("resume");
  const agent = AGENTS.includes(params.get("agent")) ? params.get("agent") : defaultAgent();
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  const missingNote = h("p", { class: "missing-note", role: "status", hidden: true });
  const dirs = h("datalist", { id: "dirs" });
  const models = h("datalist", { id: "models" });
  const executor = h(
    "fieldset",
    { class: "field" },
    h("legend", { text: "Agent" }),
    h(
      "div",
      { class: "segmented" },
      AGENTS.map((name) =>
        h(
          "label",
          {},
          h("input", { type: "radio", name: "executor", value: name, checked: name === agent }),
          AGENT_NAMES[name],
          agentMissing(name) ? h("span", { class: "missing-tag", text: "not installed" }) : null,
        ),
      ),
    ),
  );
  const project = h("input", {
    id: "project",
    name: "project",
    list: "dirs",
    placeholder: "empty: the folder arpc runs in",
    autocomplete: "off",
    autocapitalize: "off",
    spellcheck: "false",
    value: params.get("project") || "",
  });
  const model = h("input", {
    id: "model",
    name: "model",
    list: "models",
    placeholder: "default",
    autocomplete: "off",
    autocapitalize: "off",
    spellcheck: "false",
  });
  const permission = h(
    "select",
    { id: "permission", name: "permission" },
    PERMISSION_MODES.map(([value, label]) => h("option", { value, text: label })),
  );
  const prompt = h("textarea", {
    id: "prompt",
    name: "prompt",
    required: true,
    rows: 6,
    placeholder: "What should the agent do?",
  });
  const attach = new AttachPicker("new-attachments");
  const submit = h("button", { class: "btn primary", type: "submit", text: resume ? "Continue" : "Start" });
  const form = h(
    "form",
    { class: "form", id: "new-form", novalidate: true },
    resume
      ? h(
          "p",
          { class: "notice" },
          `Continues the ${AGENT_NAMES[agent]} conversation `,
          h("code", { text: resume }),
        )
      : null,
    executor,
    missingNote,
    h(
      "div",
      { class: "row" },
      h(
        "div",
        { class: "field" },
        h("label", { for: "project", text: "Project folder" }),
        project,
        dirs,
        h("span", { class: "help", text: "Pick one the agent has worked in, or type a path." }),
      ),
      h(
        "div",
        { class: "field" },
        h("label", { for: "model", text: "Model" }),
        model,
        models,
        h("span", { class: "help", text: "Empty: the agent's default." }),
      ),
    ),
    h("div", { class: "field" }, h("label", { for: "permission", text: "Permission mode" }), permission),
    h("div", { class: "field" }, h("label", { for: "prompt", text: "Prompt" }), prompt, attach.element),
    error,
    h(
      "div",
      { class: "form-actions" },
      submit,
      h("a", { class: "btn", href: resume ? `#/history/${agent}/${enc(resume)}` : "#/runs", text: "Cancel" }),
      h("span", { class: "hint", text: "Ctrl+Enter (⌘+Enter) starts" }),
    ),
  );
  const heading = h("h1", { text: resume ? "Continue a conversation" : "New session" });
  setMain(h("div", { class: "page-head" }, heading), form);
  if (resume) for (const input of executor.querySelectorAll("input")) input.disabled = input.value !== agent;

  const chosen = () => form.querySelector("input[name=executor]:checked")?.value || defaultAgent();
  const fillLists = async () => {
    const name = chosen();
    explainMissing(missingNote, name);
    models.replaceChildren(...MODELS[name].map((m) => h("option", { value: m })));
    try {
      const data = await api(`/api/${name}/projects/working-directories`);
      const options = data.workingDirectories.map((d) => h("option", { value: d }));
      if (chosen() === name) dirs.replaceChildren(...options);
    } catch (err) {
      report(err);
    }
  };
  executor.addEventListener("change", fillLists);
  fillLists();

  form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    if (!prompt.value.trim()) {
      error.textContent = "Write a prompt for the agent.";
      error.hidden = false;
      prompt.focus();
      return;
    }
    const body = { executor: chosen(), prompt: prompt.value, permissionMode: permission.value };
    if (project.value.trim()) body.projectPath = project.value.trim();
    if (model.value.trim()) body.model = model.value.trim();
    if (resume) body.resume = resume;
    if (attach.count) body.attachments = attach.toJson();
    submit.disabled = true;
    try {
      const run = await api("/api/sessions", { method: "POST", body });
      location.hash = `#/run/${enc(run.session_id)}`;
    } catch (err) {
      report(err, error);
    } finally {
      submit.disabled = false;
    }
  });
  (resume ? prompt : project).focus();
}

// --- one run, live --------------------------------------------------------------------------------

/**
 * Follows a run's events over Server-Sent Events from the last seq seen. Any error closes the
 * EventSource and opens a new one with ?after=<last seq> after a growing delay, so a dropped
 * network (or a relay restart) resumes where it stopped; events at or below the last seq are
 * dropped, so nothing is shown twice.
 */
class RunStream {
  constructor(id, { after = 0, onEvent, onEnd, onState, onLost }) {
    this.id = id;
    this.onEvent = onEvent;
    this.onEnd = onEnd;
    this.onState = onState;
    this.onLost = onLost;
    this.lastSeq = after;
    this.reconnects = 0;
    this.failures = 0;
    this.source = null;
    this.timer = null;
    this.stopped = true;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.open();
  }

  open() {
    clearTimeout(this.timer);
    const source = new EventSource(`/api/sessions/${enc(this.id)}/events?after=${this.lastSeq}`);
    this.source = source;
    source.onopen = () => {
      this.failures = 0;
      this.onState("live");
    };
    source.onmessage = (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      if (typeof event.seq !== "number" || event.seq <= this.lastSeq) return;
      this.lastSeq = event.seq;
      this.onEvent(event);
    };
    source.addEventListener("end", (message) => {
      this.close();
      this.onState("ended");
      let session = null;
      try {
        session = JSON.parse(message.data);
      } catch {
        /* keep null */
      }
      this.onEnd(session);
    });
    source.onerror = () => {
      if (this.source !== source || this.stopped) return;
      source.close();
      this.source = null;
      this.reconnects++;
      const delay = Math.min(RECONNECT_MAX_MS, RECONNECT_FIRST_MS * 2 ** this.failures++);
      this.onState("reconnecting");
      this.timer = setTimeout(() => this.retry(), delay * (0.75 + Math.random() / 2));
    };
  }

  /** Reopens, unless the session is gone (deleted elsewhere): then there is nothing to follow. */
  async retry() {
    if (this.stopped) return;
    try {
      await api(`/api/sessions/${enc(this.id)}?limit=1`);
    } catch (err) {
      if (this.stopped) return;
      if (err instanceof ApiError && !err.fromRelay && err.status === 404) {
        this.close();
        this.onLost(err);
        return;
      }
      // The relay or the client is still away: the EventSource's own error schedules the next try.
    }
    if (!this.stopped) this.open();
  }

  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.source = null;
  }
}

// --- parts of a conversation, shared by a live run and a stored one ---------------------------------

const preview = (text) => h("span", { class: "preview", text: firstLine(text, 100) });

/** A folded block: a one-line summary; the body shows when opened. */
function fold(cls, summary, body) {
  return h(
    "details",
    { class: `fold ${cls}`.trim() },
    h("summary", {}, summary),
    h("div", { class: "fold-body" }, body),
  );
}

function thinkingItem(cls, text) {
  const summary = [h("span", { text: "Thinking" }), preview(text)];
  return h("li", { class: cls }, fold("thinking", summary, text || ""));
}

/** The header line of a message: who, then details (model, tokens), then when. */
function roleLine(...parts) {
  return h("div", { class: "role" }, parts);
}

/**
 * Tool calls by id, so that each result is shown inside the call it answers. A call is
 * forgotten once its result arrived (or its item left the page), and at most MAX_OPEN_CALLS wait.
 */
class ToolFolds {
  constructor(pending) {
    this.pending = pending;
    this.calls = new Map();
  }

  call(cls, { id, name, input, when }) {
    const state = h("span", { class: "state", text: this.pending });
    const summary = [
      h("span", { class: "tool", text: name || "tool" }),
      h("span", { class: "preview", text: compactJson(input) }),
      state,
      when,
    ];
    const details = fold("", summary, [
      h("div", { class: "label", text: "Input" }),
      h("pre", { class: "wrap" }, h("code", { text: prettyJson(input ?? {}) })),
    ]);
    const item = h("li", { class: cls }, details);
    if (id) {
      this.calls.delete(id);
      this.calls.set(id, { body: details.lastElementChild, state });
      if (this.calls.size > MAX_OPEN_CALLS) this.calls.delete(this.calls.keys().next().value);
      item.dataset.toolCall = id;
    }
    return item;
  }

  /**
   * Puts a result inside its call (and returns null), or gives it an item of its own; `attrs`
   * go on the result inside a call (an item of its own gets the caller's).
   */
  result(cls, { id, name, text, isError, when, attrs = {} }) {
    const result = h(
      "div",
      { class: "tool-result" },
      h("div", { class: "label", text: isError ? "Error" : "Result" }),
      h("pre", { class: "wrap" }, h("code", { text: text || "(no output)" })),
    );
    if (isError) result.dataset.error = "";
    const call = id ? this.calls.get(id) : null;
    if (!call) {
      const summary = [h("span", { class: "tool", text: name || "tool result" }), preview(text), when];
      const item = h("li", { class: cls }, fold("", summary, result));
      if (id) item.dataset.toolResult = id;
      return item;
    }
    for (const [key, value] of Object.entries(attrs)) result.setAttribute(key, value);
    this.calls.delete(id);
    ToolFolds.settle(call, result, isError);
    return null;
  }

  /** Shows `result` inside a call's body and marks the call done. */
  static settle(call, result, isError) {
    call.body.append(result);
    call.state.textContent = isError ? "✗ failed" : "✓";
    call.state.className = `state ${isError ? "bad" : "ok"}`;
  }

  /** The item of a call left the page: its result will get an item of its own. */
  forget(item) {
    if (item.dataset.toolCall) this.calls.delete(item.dataset.toolCall);
  }
}

/**
 * Renders a run's events into a list; tool results join the call they answer. The list keeps
 * `limit` items: the oldest leave as new ones arrive. `before` is the seq below which nothing
 * is shown (0: the run's start is on the page); `prepend` brings earlier events back.
 */
class EventView {
  constructor(list, { before = 0, onChange = () => {}, sessionId = null } = {}) {
    this.list = list;
    this.sessionId = sessionId;
    this.tools = new ToolFolds("…");
    this.lastText = null;
    this.before = before;
    this.limit = KEEP_EVENTS;
    this.onChange = onChange;
  }

  add(event) {
    const el = this.item(event, this.tools);
    if (el) this.list.append(el);
    if (this.list.childElementCount > this.limit) this.trim();
  }

  item(event, tools) {
    const el = this.render(event, tools);
    if (el) {
      el.dataset.seq = event.seq;
      el.dataset.kind = event.kind;
    }
    return el;
  }

  /** Drops the oldest items down to the limit. */
  trim() {
    while (this.list.childElementCount > this.limit) {
      const first = this.list.firstElementChild;
      this.tools.forget(first);
      first.remove();
    }
    this.before = Number(this.list.firstElementChild.dataset.seq) - 1;
    this.onChange();
  }

  /**
   * Puts earlier events (all below `before`, in order) above the ones shown. A call whose
   * result is already on the page as an item of its own takes that result in.
   */
  prepend(events, before) {
    const tools = new ToolFolds("…");
    const items = events.map((event) => this.item(event, tools)).filter(Boolean);
    const alone = new Map();
    for (const li of this.list.querySelectorAll("li[data-tool-result]")) alone.set(li.dataset.toolResult, li);
    for (const [id, call] of tools.calls) {
      const item = alone.get(id);
      const result = item?.querySelector(".tool-result");
      if (!result) continue;
      result.dataset.seq = item.dataset.seq;
      result.dataset.kind = item.dataset.kind;
      ToolFolds.settle(call, result, "error" in result.dataset);
      item.remove();
    }
    this.list.prepend(...items);
    this.before = before;
    this.limit = Math.min(MAX_EVENTS_SHOWN, Math.max(this.limit, this.list.childElementCount));
    this.onChange();
  }

  render(event, tools) {
    const when = timeEl(event.ts, { clock: true });
    switch (event.kind) {
      case "prompt": {
        const who = event.run ? `Follow-up · run ${event.run + 1}` : "Prompt";
        return h(
          "li",
          { class: "ev prompt" },
          roleLine(h("span", { text: who }), when),
          h("div", { class: "bubble", text: event.text || "" }),
          attachmentThumbs(this.sessionId, event.attachments),
        );
      }
      case "text":
        this.lastText = (event.text || "").trim();
        return h("li", { class: "ev text" }, h("div", { class: "bubble" }, markdown(event.text)));
      case "thinking":
        return thinkingItem("ev thinking", event.text);
      case "tool_call":
        return tools.call("ev tool", {
          id: event.tool_id,
          name: event.tool_name,
          input: event.tool_input,
        });
      case "tool_result":
        return tools.result("ev tool", {
          id: event.tool_id,
          name: event.tool_name,
          text: event.text,
          isError: event.is_error,
          attrs: { "data-seq": event.seq, "data-kind": "tool_result" },
        });
      case "result": {
        const facts = [tokensText(event.usage), costText(event.usage?.cost_usd)].filter(Boolean).join(" · ");
        const text = (event.text || "").trim();
        if (!event.is_error && (!text || text === this.lastText)) {
          return h("li", { class: "ev system", text: facts ? `Result · ${facts}` : "Result" });
        }
        return h(
          "li",
          { class: `ev result${event.is_error ? " error" : ""}` },
          roleLine(
            h("span", { text: event.is_error ? "Failed" : "Result" }),
            facts ? h("span", { text: facts }) : null,
          ),
          h("div", { class: "bubble" }, event.is_error ? text : markdown(text)),
        );
      }
      case "error":
        return h("li", { class: "ev error" }, h("div", { class: "bubble", text: event.text || "error" }));
      case "stderr":
        return h("li", { class: "ev stderr", text: event.text || "" });
      case "status": {
        const exit = typeof event.exit_code === "number" ? ` · exit ${event.exit_code}` : "";
        return h("li", { class: "ev status", text: `${event.text || event.status || "run ended"}${exit}` });
      }
      case "approval_request":
        return h(
          "li",
          { class: "ev approval" },
          h("span", { text: `Asked to use ${event.tool_name || "a tool"}` }),
          event.text ? h("code", { text: firstLine(event.text, 200) }) : null,
        );
      case "approval_decision": {
        const what = event.decision === "allow" ? "Allowed" : "Denied";
        const by = { person: "", timeout: " (no answer in time)", cancel: " (run cancelled)" }[event.by] ?? "";
        const note = event.message ? ` · “${firstLine(event.message, 120)}”` : "";
        return h("li", { class: `ev approval ${event.decision || ""}`, text: `${what}${by}${note}` });
      }
      case "system":
      default: {
        const raw = event.raw && typeof event.raw === "object" ? event.raw : {};
        const bits = [raw.subtype || raw.type || event.kind];
        if (raw.model) bits.push(raw.model);
        if (event.text) bits.push(firstLine(event.text, 80));
        return h("li", { class: "ev system", text: bits.join(" · ") });
      }
    }
  }
}

/** A <dt>/<dd> pair; mono values (paths, ids) take two columns. */
function fact(label, value, mono = false) {
  if (value === null || value === undefined || value === "") return null;
  return h(
    "div",
    { class: mono ? "wide" : null },
    h("dt", { text: label }),
    h("dd", { class: mono ? "mono" : null }, value),
  );
}

function runFacts(run) {
  return [
    fact("Agent", AGENT_NAMES[run.executor] || run.executor),
    fact("Model", run.model || "default"),
    fact("Project", run.project_path, true),
    fact("Permission", run.permission_mode || "default"),
    fact("Started", timeEl(run.created_at)),
    fact("Duration", duration(run.started_at, run.ended_at)),
    fact("Tokens", tokensText(run.usage)),
    fact("Cost", costText(run.cost_usd)),
    fact("Runs", run.runs > 1 ? String(run.runs) : null),
    fact("Exit", run.exit_code !== null && run.status !== "running" ? String(run.exit_code) : null),
    fact("Error", run.error),
    fact("Conversation", run.agent_session_id, true),
  ];
}

async function runPage(id) {
  const since = generation;
  let run;
  try {
    run = await api(`/api/sessions/${enc(id)}?limit=1`);
  } catch (err) {
    if (stale(since)) return;
    setMain(
      h("a", { class: "back", href: "#/runs", text: "‹ Runs" }),
      h("p", { class: "empty", text: unavailable(err) }),
    );
    if (err.fromRelay) report(err);
    return;
  }
  if (stale(since)) return;
  const title = h("h1", { text: firstLine(run.prompt, 400) || "(empty prompt)" });
  const status = h("span", { id: "run-status" });
  const facts = h("dl", { class: "facts" });
  const live = h("span", {
    class: "live",
    id: "live",
    "data-state": "connecting",
    "aria-live": "polite",
    text: "connecting…",
  });
  const cancel = h("button", { class: "btn danger", type: "button", id: "cancel", text: "Cancel run" });
  const remove = h("button", { class: "btn danger", type: "button", id: "delete", text: "Delete" });
  const events = h("ol", { class: "events", id: "events", "aria-label": "Agent output" });
  const approvals = new ApprovalCards(id);
  onLeave(() => approvals.close());
  const earlier = h("button", { class: "btn small", type: "button", id: "earlier", text: "Show earlier" });
  const earlierNote = h("span", { class: "hint" });
  const earlierBar = h("div", { class: "form-actions earlier", hidden: true }, earlier, earlierNote);
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  const followUp = h("textarea", {
    id: "follow-up",
    name: "prompt",
    rows: 1,
    "aria-label": "Follow-up prompt",
    placeholder: "Follow-up prompt…",
  });
  const send = h("button", { class: "btn primary", type: "submit", id: "send", text: "Send" });
  const attach = new AttachPicker("follow-attachments");
  const changes = new ChangesPanel(id);
  const outputTab = h("button", { type: "button", role: "tab", id: "tab-output", "aria-selected": "true", text: "Output" });
  const changesTab = h("button", { type: "button", role: "tab", id: "tab-changes", "aria-selected": "false", text: "Changes" });
  const tabs = h("div", { class: "run-tabs", role: "tablist", "aria-label": "Run views" }, outputTab, changesTab);
  const hint = h("p", { class: "hint" });
  const composer = h(
    "div",
    { class: "composer" },
    error,
    h("form", { id: "follow-form" }, attach.element, followUp, send),
    hint,
  );
  setMain(
    h("a", { class: "back", href: "#/runs", text: "‹ Runs" }),
    h(
      "section",
      { class: "summary", "aria-label": "Session" },
      h("div", { class: "card-top" }, status, live),
      title,
      facts,
      h("div", { class: "actions" }, cancel, remove),
    ),
    tabs,
    h("div", { id: "output-pane", role: "tabpanel", "aria-labelledby": "tab-output" }, approvals.section, earlierBar, events),
    changes.element,
    composer,
  );
  focusMain();
  changes.element.hidden = true;
  const selectTab = (showChanges) => {
    outputTab.setAttribute("aria-selected", String(!showChanges));
    changesTab.setAttribute("aria-selected", String(showChanges));
    $("#output-pane").hidden = showChanges;
    changes.element.hidden = !showChanges;
    if (showChanges) changes.refresh();
  };
  outputTab.addEventListener("click", () => selectTab(false));
  changesTab.addEventListener("click", () => selectTab(true));

  // Only the newest KEEP_EVENTS events are fetched and kept; earlier ones come on request.
  const start = Math.max(0, (run.last_seq || 0) - KEEP_EVENTS);
  const showEarlier = () => {
    const full = events.childElementCount >= MAX_EVENTS_SHOWN;
    earlierBar.hidden = view.before <= 0;
    earlier.hidden = full;
    earlierNote.textContent = full
      ? `The page shows at most ${number(MAX_EVENTS_SHOWN)} events; earlier ones are not shown.`
      : `Events before #${view.before + 1} are not shown.`;
  };
  const view = new EventView(events, { before: start, onChange: showEarlier, sessionId: id });
  showEarlier();
  earlier.addEventListener("click", async () => {
    const before = view.before;
    const after = Math.max(0, before - Math.min(EARLIER_PAGE, MAX_EVENTS_SHOWN - events.childElementCount));
    earlier.disabled = true;
    try {
      const page = await api(`/api/sessions/${enc(id)}?after=${after}&limit=${before - after}`);
      if (view.before === before) view.prepend(page.events.filter((e) => e.seq <= before), after);
    } catch (err) {
      report(err, error);
    } finally {
      earlier.disabled = false;
    }
  });
  const show = (state) => {
    // The Changes tab refreshes when a run ends.
    if (run && run.status === "running" && state.status !== "running" && !changes.element.hidden) changes.refresh();
    run = state;
    approvals.sync(run.status === "running" ? run.pending_approvals || [] : []);
    status.replaceChildren(badge(run.status));
    facts.replaceChildren(...runFacts(run).filter(Boolean));
    const running = run.status === "running";
    cancel.hidden = !running;
    followUp.disabled = send.disabled = running;
    hint.textContent = running
      ? "The agent is working; a follow-up can be sent when it finishes."
      : "Ctrl+Enter (⌘+Enter) sends; the agent resumes the same conversation.";
  };
  show(run);
  // The duration of a running agent keeps counting.
  const ticker = setInterval(() => {
    if (run.status === "running") facts.replaceChildren(...runFacts(run).filter(Boolean));
  }, 1000);
  onLeave(() => clearInterval(ticker));

  // While the agent runs, the page follows its output, unless the reader scrolled up; the
  // scroll happens once a frame however many events arrive.
  let atBottom = true;
  let scrollQueued = false;
  const onScroll = () => {
    atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 120;
  };
  window.addEventListener("scroll", onScroll, { passive: true });
  onLeave(() => window.removeEventListener("scroll", onScroll));
  const follow = () => {
    if (scrollQueued || !atBottom || run.status !== "running") return;
    scrollQueued = true;
    requestAnimationFrame(() => {
      scrollQueued = false;
      events.lastElementChild?.scrollIntoView({ block: "end" });
    });
  };

  const stream = new RunStream(id, {
    after: start,
    onEvent: (event) => {
      view.add(event);
      approvals.onEvent(event);
      if (event.kind === "status" || event.kind === "result") refresh();
      follow();
    },
    onEnd: (session) => {
      if (session && session.deleted) {
        location.hash = "#/runs";
        return;
      }
      if (session && session.session_id) show(session);
      else refresh();
    },
    onLost: (err) => {
      live.dataset.state = "ended";
      live.textContent = "gone";
      error.textContent = err.message;
      error.hidden = false;
    },
    onState: (state) => {
      live.dataset.state = state;
      live.dataset.reconnects = String(stream.reconnects);
      live.textContent = LIVE_LABELS[state] || state;
    },
  });
  const refresh = async () => {
    try {
      show(await api(`/api/sessions/${enc(id)}?limit=1`));
    } catch (err) {
      report(err);
    }
  };
  onLeave(() => stream.close());
  stream.start();

  cancel.addEventListener("click", async () => {
    const ok = await confirmDialog({
      title: "Cancel this run?",
      text: "The agent is stopped. Its output so far is kept, and you can send a follow-up later.",
      yes: "Cancel run",
    });
    if (!ok) return;
    cancel.disabled = true;
    try {
      show(await api(`/api/sessions/${enc(id)}/cancel`, { method: "POST" }));
    } catch (err) {
      report(err, error);
    } finally {
      cancel.disabled = false;
    }
  });
  remove.addEventListener("click", async () => {
    const ok = await confirmDialog({
      title: "Delete this session?",
      text: "Its output is removed from this machine for good (a running agent is stopped first).",
      yes: "Delete",
    });
    if (!ok) return;
    try {
      stream.close();
      await api(`/api/sessions/${enc(id)}`, { method: "DELETE" });
      location.hash = "#/runs";
    } catch (err) {
      report(err, error);
    }
  });
  const form = $("#follow-form");
  followUp.addEventListener("input", () => {
    followUp.style.height = "auto";
    followUp.style.height = `${Math.min(followUp.scrollHeight, window.innerHeight * 0.4)}px`;
  });
  followUp.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const text = followUp.value;
    if (!text.trim()) {
      followUp.focus();
      return;
    }
    send.disabled = true;
    try {
      const body = { prompt: text };
      if (attach.count) body.attachments = attach.toJson();
      show(await api(`/api/sessions/${enc(id)}/messages`, { method: "POST", body }));
      attach.clear();
      followUp.value = "";
      followUp.style.height = "";
      stream.start();
    } catch (err) {
      report(err, error);
      send.disabled = run.status === "running";
    }
  });
}

// --- approvals ------------------------------------------------------------------------------------

/**
 * The cards of a run's pending approvals (ask mode), at the top of its page: what the agent
 * wants to run or change, Allow / Deny / Allow for this session, words for the agent, and the
 * time left. The first decision wins: one taken elsewhere meanwhile removes the card.
 */
class ApprovalCards {
  constructor(sessionId) {
    this.sessionId = sessionId;
    this.cards = new Map();
    this.section = h("section", { class: "approvals", id: "approvals", "aria-label": "Waiting for you", hidden: true });
    this.timer = setInterval(() => this.tick(), 1000);
  }

  close() {
    clearInterval(this.timer);
  }

  /** The session's pending approvals as the API says (a card for each, no others). */
  sync(pending) {
    const ids = new Set(pending.map((a) => a.approval_id));
    for (const id of [...this.cards.keys()]) if (!ids.has(id)) this.drop(id);
    for (const approval of pending) this.add(approval);
  }

  onEvent(event) {
    if (event.kind === "approval_request") {
      this.add({
        approval_id: event.approval_id,
        tool_name: event.tool_name,
        tool_input: event.tool_input,
        title: event.text,
        expires_at: event.expires_at,
      });
    } else if (event.kind === "approval_decision" || event.kind === "status") {
      if (event.kind === "status") for (const id of [...this.cards.keys()]) this.drop(id);
      else this.drop(event.approval_id);
    }
  }

  add(approval) {
    if (!approval.approval_id || this.cards.has(approval.approval_id)) return;
    if (approval.expires_at && Date.parse(approval.expires_at) <= Date.now()) return;
    const left = h("span", { class: "left" });
    const message = h("input", {
      type: "text",
      class: "message",
      "aria-label": "Message for the agent (optional)",
      placeholder: "Message for the agent (optional)",
      autocomplete: "off",
      maxlength: 4096,
    });
    const problem = h("p", { class: "form-error", role: "alert", hidden: true });
    const button = (text, cls, body) =>
      h("button", { class: `btn ${cls}`, type: "button", text, onclick: () => this.decide(approval, body, card) });
    const card = h(
      "article",
      { class: "approval-card", "data-approval": approval.approval_id, "aria-label": `Approve ${approval.tool_name}?` },
      h("div", { class: "card-top" }, h("span", { class: "chip", text: approval.tool_name || "tool" }), left),
      h("h2", { text: `Allow ${approval.tool_name || "this tool"}?` }),
      h("code", { class: "what", text: approval.title || approval.tool_name || "" }),
      approvalDetail(approval.tool_input),
      message,
      h(
        "div",
        { class: "decide" },
        button("Allow", "primary", { decision: "allow" }),
        button("Deny", "danger", { decision: "deny" }),
        button("Allow for this session", "", { decision: "allow", remember: "session" }),
      ),
      problem,
    );
    card.left = left;
    card.expires = Date.parse(approval.expires_at || "") || null;
    card.message = message;
    card.problem = problem;
    this.cards.set(approval.approval_id, card);
    this.section.append(card);
    this.section.hidden = false;
    this.tick();
  }

  drop(approvalId) {
    const card = this.cards.get(approvalId);
    if (!card) return;
    card.remove();
    this.cards.delete(approvalId);
    this.section.hidden = this.cards.size === 0;
  }

  async decide(approval, body, card) {
    for (const b of card.querySelectorAll("button")) b.disabled = true;
    const text = card.message.value.trim();
    try {
      await api(`/api/sessions/${enc(this.sessionId)}/approvals/${enc(approval.approval_id)}`, {
        method: "POST",
        body: text ? { ...body, message: text } : body,
      });
      this.drop(approval.approval_id);
      refreshInbox();
    } catch (err) {
      if (err instanceof ApiError && (err.status === 409 || err.status === 404)) {
        this.drop(approval.approval_id); // decided elsewhere, expired, or the run ended
        refreshInbox();
        return;
      }
      for (const b of card.querySelectorAll("button")) b.disabled = false;
      report(err, card.problem);
    }
  }

  tick() {
    for (const card of this.cards.values()) {
      if (!card.expires) continue;
      const seconds = Math.max(0, Math.round((card.expires - Date.now()) / 1000));
      card.left.textContent = seconds >= 60 ? `${Math.floor(seconds / 60)} min ${seconds % 60} s left` : `${seconds} s left`;
    }
  }
}

/** What a tool use would do, shown whole: the command, or for an edit its old and new text. */
function approvalDetail(input) {
  if (!input || typeof input !== "object") return null;
  if (typeof input.old_string === "string" || typeof input.new_string === "string") {
    const lines = [
      ...String(input.old_string || "").split("\n").map((l) => h("span", { class: "del", text: `- ${l}` })),
      ...String(input.new_string || "").split("\n").map((l) => h("span", { class: "add", text: `+ ${l}` })),
    ];
    return h("pre", { class: "diff" }, lines.flatMap((l) => [l, "\n"]));
  }
  if (typeof input.content === "string") {
    return h("pre", { class: "diff" }, input.content.split("\n").flatMap((l) => [h("span", { class: "add", text: `+ ${l}` }), "\n"]));
  }
  return null;
}

/** "Notify me": asks the browser for its permission (a tap is needed); hidden once decided.
 * With Push, the browser is told also while no console tab is open (push.js). */
function notifyButton() {
  if (!("Notification" in window) || Notification.permission !== "default") return null;
  const button = h("button", { class: "btn", type: "button", id: "notify", text: "Notify me" });
  button.addEventListener("click", async () => {
    const answer = await Notification.requestPermission();
    button.hidden = answer !== "default";
    if (answer === "granted" && pushAvailable()) {
      subscribePush(api).catch(() => {}); // without Push: notifications while the page is open
    }
  });
  return button;
}

let seenApprovals = null; // approval ids the inbox knew at its last look (null: not looked yet)

/** While the console is open, a browser notification for each approval that starts waiting,
 * unless its run is the page on screen. */
function notifyNew(list) {
  const known = seenApprovals;
  seenApprovals = new Set(list.map((a) => a.approval_id));
  if (known === null || !("Notification" in window) || Notification.permission !== "granted") return;
  for (const approval of list) {
    if (known.has(approval.approval_id)) continue;
    const onScreen = !document.hidden && location.hash === `#/run/${enc(approval.session_id)}`;
    if (onScreen) continue;
    const shown = new Notification(`Allow ${approval.tool_name}?`, {
      body: approval.title || approval.tool_name,
      tag: approval.approval_id,
      requireInteraction: true,
    });
    shown.onclick = () => {
      window.focus();
      location.hash = `#/run/${enc(approval.session_id)}`;
      shown.close();
    };
  }
}

/** The header's count of approvals waiting on this machine; it links to the oldest one's run. */
async function refreshInbox() {
  const link = $("#inbox");
  if (!link) return;
  try {
    const data = await api("/api/approvals");
    const list = Array.isArray(data && data.approvals) ? data.approvals : [];
    $("#inbox-count").textContent = String(list.length);
    link.hidden = list.length === 0;
    link.setAttribute("aria-label", `${list.length} approval${list.length === 1 ? "" : "s"} waiting`);
    if (list.length) link.setAttribute("href", `#/run/${enc(list[0].session_id)}`);
    notifyNew(list);
  } catch (err) {
    // The badge is a convenience: a failed poll leaves it as it was (the page reports errors).
  }
}

// --- history --------------------------------------------------------------------------------------

function agentTabs(current, base = "#/history/") {
  return h(
    "nav",
    { class: "agent-tabs", "aria-label": "Agent" },
    AGENTS.map((name) =>
      h("a", {
        href: base + name,
        "aria-current": name === current ? "page" : null,
        text: AGENT_NAMES[name],
      }),
    ),
  );
}

function historyItem(agent, session) {
  return h(
    "li",
    {},
    h(
      "a",
      { href: `#/history/${agent}/${enc(session.id)}`, "data-session": session.id },
      h("div", { class: "card-title", text: session.title || "(untitled)" }),
      h(
        "div",
        { class: "meta" },
        timeEl(session.lastActivity),
        h("span", { text: `${session.messageCount} messages` }),
        session.gitBranch ? h("span", { text: `⎇ ${session.gitBranch}` }) : null,
      ),
    ),
  );
}

function projectEntry(agent, project, open) {
  const list = h("ul", {}, project.recentSessions.map((s) => historyItem(agent, s)));
  const details = h(
    "details",
    { class: "project", open, "data-project": project.id },
    h(
      "summary",
      {},
      h("span", { class: "name", text: project.path || project.id }),
      h(
        "span",
        { class: "meta" },
        h("span", { text: plural(project.sessionCount, "session") }),
        timeEl(project.lastActivity),
      ),
    ),
    list,
  );
  if (project.sessionCount > project.recentSessions.length) {
    let offset = project.recentSessions.length;
    const label = (left) => `Show more (${left})`;
    const left = project.sessionCount - offset;
    const more = h("button", { class: "btn small", type: "button", text: label(left) });
    const holder = h("li", {}, more);
    list.append(holder);
    more.addEventListener("click", async () => {
      more.disabled = true;
      try {
        const path = `/api/${agent}/projects/${enc(project.id)}/sessions`;
        const page = await api(`${path}?limit=${PROJECT_PAGE}&offset=${offset}`);
        offset += page.sessions.length;
        holder.before(...page.sessions.map((s) => historyItem(agent, s)));
        if (!page.hasMore) holder.remove();
        else more.textContent = label(page.total - offset);
      } catch (err) {
        report(err);
      } finally {
        more.disabled = false;
      }
    });
  }
  return details;
}

async function historyPage(agent) {
  const search = h("input", {
    class: "search",
    id: "search",
    type: "search",
    placeholder: "Search projects and sessions",
    "aria-keyshortcuts": "/",
    "aria-label": "Search projects and sessions",
    autocomplete: "off",
  });
  const results = h("div", { id: "matches" });
  const loading = h("p", { class: "loading", text: "Loading…" });
  const projects = h("div", { class: "cards", id: "projects" }, loading);
  setMain(
    h("div", { class: "page-head" }, h("h1", { text: "History" })),
    agentTabs(agent),
    search,
    results,
    projects,
  );
  focusMain();
  const since = generation;
  let data;
  try {
    data = await api(`/api/${agent}/projects`);
  } catch (err) {
    if (stale(since)) return;
    projects.replaceChildren(h("p", { class: "empty", text: unavailable(err) }));
    report(err);
    return;
  }
  const all = data.projects;
  const draw = (list) => {
    if (!all.length) {
      const none = `No ${AGENT_NAMES[agent]} sessions on this machine yet.`;
      projects.replaceChildren(h("p", { class: "empty", text: none }));
      return;
    }
    projects.replaceChildren(...list.map((p, i) => projectEntry(agent, p, i < 3)));
  };
  draw(all);

  let everything = null; // every session of the agent, fetched on the first search
  let token = 0;
  const filter = async () => {
    const query = search.value.trim().toLowerCase();
    const mine = ++token;
    if (!query) {
      results.replaceChildren();
      draw(all);
      return;
    }
    draw(
      all.filter(
        (p) =>
          (p.path || p.id).toLowerCase().includes(query) ||
          p.recentSessions.some((s) => (s.title || "").toLowerCase().includes(query)),
      ),
    );
    try {
      everything ??= (await api(`/api/${agent}/sessions?limit=${SEARCH_LIMIT}`)).sessions;
    } catch (err) {
      report(err);
      return;
    }
    if (mine !== token) return;
    const hits = everything.filter(
      (s) => `${s.title || ""}\n${s.projectPath || ""}`.toLowerCase().includes(query),
    );
    const shown = hits.slice(0, MAX_HITS).map((x) => historyItem(agent, x));
    results.replaceChildren(
      h("h2", { class: "section-title", text: plural(hits.length, "matching session") }),
      hits.length ? h("ul", { class: "results" }, shown) : null,
      h("h2", { class: "section-title", text: "Projects" }),
    );
  };
  let debounce = null;
  search.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(filter, 150);
  });
  onLeave(() => clearTimeout(debounce));
}

/** Renders one normalised history message; tool results join their call by toolUseId. */
function historyMessage(message, tools) {
  const when = timeEl(message.timestamp, { clock: true });
  switch (message.kind) {
    case "thinking":
      return thinkingItem("msg ev thinking", message.text);
    case "tool_use":
      return tools.call("msg ev tool", {
        id: message.toolUseId,
        name: message.toolName,
        input: message.toolInput ?? message.text,
        when,
      });
    case "tool_result":
      return tools.result("msg ev tool", {
        id: message.toolUseId,
        name: message.toolName,
        text: message.text,
        isError: message.isError,
        when,
      });
    case "summary":
      return h(
        "li",
        { class: "msg ev system" },
        fold("", [h("span", { text: "Summary" }), preview(message.text)], markdown(message.text)),
      );
    default: {
      if (message.role === "user") {
        return h(
          "li",
          { class: "msg user" },
          roleLine(h("span", { text: "You" }), when),
          h("div", { class: "bubble", text: message.text }),
        );
      }
      const assistant = message.role === "assistant";
      const who = assistant ? AGENT_NAMES[message.agent] || "Agent" : "System";
      const model = message.model ? h("span", { class: "model", text: message.model }) : null;
      return h(
        "li",
        { class: `msg ${assistant ? "assistant" : "system"}` },
        roleLine(h("span", { text: who }), model, when),
        h("div", { class: "bubble" }, markdown(message.text)),
      );
    }
  }
}

/** A link naming no agent we know: it goes nowhere (the name never reaches a request). */
async function unknownAgentPage(name) {
  setMain(
    h("a", { class: "back", href: "#/history/claude", text: "‹ History" }),
    h("p", { class: "empty", text: `There is no agent called “${name}” (only ${AGENTS.join(", ")}).` }),
  );
  focusMain();
}

async function historySessionPage(agent, sid) {
  if (!AGENTS.includes(agent)) throw new Error(`unknown agent ${agent}`); // route() checks first
  const backText = `‹ ${AGENT_NAMES[agent] || agent} history`;
  const back = h("a", { class: "back", href: `#/history/${agent}`, text: backText });
  const since = generation;
  let page;
  try {
    page = await api(`/api/${agent}/sessions/${enc(sid)}?limit=${HISTORY_PAGE}`);
  } catch (err) {
    if (stale(since)) return;
    setMain(back, h("p", { class: "empty", text: unavailable(err) }));
    if (err.fromRelay) report(err);
    return;
  }
  if (stale(since)) return;
  const session = page.session;
  const list = h("ol", { class: "events", id: "messages", "aria-label": "Conversation" });
  const more = h("button", { class: "btn", type: "button", id: "more", text: "Load more" });
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  const resume = new URLSearchParams({ agent, resume: session.id });
  if (session.projectPath) resume.set("project", session.projectPath);
  const resumeHref = `#/new?${resume}`;
  const remove = h("button", { class: "btn danger", type: "button", id: "delete", text: "Delete" });
  setMain(
    back,
    h(
      "section",
      { class: "summary", "aria-label": "Conversation" },
      h(
        "div",
        { class: "card-top" },
        h("span", { class: "chip", text: AGENT_NAMES[agent] }),
        h("span", { class: "when" }, timeEl(session.lastActivity)),
      ),
      h("h1", { text: session.title || "(untitled)" }),
      h(
        "dl",
        { class: "facts" },
        fact("Project", session.projectPath, true),
        fact("Started", timeEl(session.createdAt)),
        fact("Messages", String(session.messageCount)),
        fact("Branch", session.gitBranch),
        fact("Version", session.version),
        fact("Session", session.id, true),
      ),
      h(
        "div",
        { class: "actions" },
        h("a", { class: "btn primary", href: resumeHref, text: "Continue conversation" }),
        remove,
      ),
    ),
    error,
    list,
    h("div", { class: "form-actions" }, more),
  );
  focusMain();
  const tools = new ToolFolds("");
  let offset = 0;
  const add = (p) => {
    for (const message of p.messages) {
      const el = historyMessage({ ...message, agent }, tools);
      if (el) {
        el.dataset.index = message.index;
        list.append(el);
      }
    }
    offset = p.offset + p.messages.length;
    more.hidden = !p.hasMore;
  };
  add(page);
  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      add(await api(`/api/${agent}/sessions/${enc(sid)}?limit=${HISTORY_PAGE}&offset=${offset}`));
    } catch (err) {
      report(err, error);
    } finally {
      more.disabled = false;
    }
  });
  remove.addEventListener("click", async () => {
    const ok = await confirmDialog({
      title: "Delete this conversation?",
      text:
        `${AGENT_NAMES[agent]}'s own file for it is removed from this machine; ` +
        "the agent cannot resume it afterwards.",
      yes: "Delete",
    });
    if (!ok) return;
    try {
      await api(`/api/${agent}/sessions/${enc(sid)}`, { method: "DELETE" });
      location.hash = `#/history/${agent}`;
    } catch (err) {
      report(err, error);
    }
  });
}

// --- start ----------------------------------------------------------------------------------------

/** Whether arpc said this agent's CLI is not on its computer. */
function agentMissing(name) {
  return AGENT_INFO[name]?.found === false;
}

/** The agent a new run starts with: the first one installed (never a missing one, unless all are). */
function defaultAgent() {
  return AGENTS.find((name) => !agentMissing(name)) || AGENTS[0];
}

/** Says in words what to do when the chosen agent (or every agent) is not installed. */
function explainMissing(note, name) {
  const info = AGENT_INFO[name];
  if (!agentMissing(name)) {
    note.hidden = true;
    return;
  }
  const none = AGENTS.every(agentMissing);
  note.replaceChildren(
    none
      ? "No agent is installed on the computer running arpc yet, so nothing can run. "
      : `${AGENT_NAMES[name]} is not installed on the computer running arpc, so it cannot run yet. `,
    "To add it, open a terminal on that computer and run ",
    h("code", { text: info.install || `npm install -g ${name}` }),
    ", then reload this page.",
  );
  note.hidden = false;
}

/** Reads the agent list from arpc; on any failure the fallback above stays. */
async function loadAgents() {
  try {
    const response = await fetch("/api/agents", {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
      cache: "no-store",
      signal: AbortSignal.timeout(AGENTS_TIMEOUT_MS),
    });
    if (!response.ok) return;
    const data = await response.json();
    const list = Array.isArray(data && data.agents) ? data.agents : [];
    const valid = list.filter((a) => a && typeof a.name === "string" && a.name);
    if (!valid.length) return;
    AGENTS = valid.map((a) => a.name);
    AGENT_NAMES = Object.fromEntries(
      valid.map((a) => [a.name, typeof a.display_name === "string" ? a.display_name : a.name]),
    );
    AGENT_INFO = Object.fromEntries(valid.map((a) => [a.name, a]));
  } catch (err) {
    console.warn("could not read the agent list; using the built-in one", err);
  }
}

async function start() {
  // The relay has remembered the token in its cookie: keep it out of the address bar, history
  // and anything copied from there.
  const url = new URL(location.href);
  if (url.searchParams.has("token")) {
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  applyTheme(currentTheme());
  $("#theme").addEventListener("click", cycleTheme);
  // The skip link must not change the hash (the hash is the route).
  $(".skip").addEventListener("click", (event) => {
    event.preventDefault();
    focusMain();
  });
  $("#banner-retry").addEventListener("click", () => {
    hideBanner();
    if (retry) retry();
  });
  document.addEventListener("keydown", (event) => {
    const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement?.tagName || "");
    if (event.key === "/" && !typing && $("#search")) {
      event.preventDefault();
      $("#search").focus();
    }
  });
  if (!location.hash) history.replaceState(null, "", "#/runs");
  await loadAgents();
  window.addEventListener("hashchange", route);
  route();
  refreshInbox();
  setInterval(refreshInbox, INBOX_POLL_MS);
  renewPush(api);
}

start();
