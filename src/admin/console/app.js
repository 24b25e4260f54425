// The Tollgate console: one page over the admin API (/admin/v1/...). Plain JavaScript, no
// framework and nothing fetched from anywhere but this gateway. Text from the server is only
// ever put into the page as text (el() sets textContent), never as HTML.
"use strict";

const API = "/admin/v1";
// An admin token pasted into the form (kept for the tab), or "" when signed in through the
// OIDC provider: then a session cookie the page cannot read signs requests, together with the
// X-Tollgate-Console header.
let token = sessionStorage.getItem("tollgate-admin-token") || "";

function authHeaders(candidate = token) {
  return { "x-tollgate-console": "1", ...(candidate ? { authorization: `Bearer ${candidate}` } : {}) };
}

// ---- small helpers ---------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

async function api(path, options = {}) {
  const headers = { ...authHeaders(), ...(options.body ? { "content-type": "application/json" } : {}) };
  const response = await fetch(API + path, { ...options, headers: { ...headers, ...(options.headers || {}) } });
  if (response.status === 401) { signOut("Your sign-in was refused; sign in again."); throw new Error("signed out"); }
  const text = await response.text();
  const body = text ? JSON.parse(text) : {};
  if (!response.ok) throw new Error(body.error ? `${body.error.code}: ${body.error.message}` : response.statusText);
  return body;
}

const fmt = (n, digits = 0) => n === null || n === undefined ? "—" :
  Number(n).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
const usd = (n) => "$" + fmt(n, 4);
const main = () => document.getElementById("main");

function table(columns, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, columns.map(([label, , cls]) => el("th", { class: cls }, label)))),
    el("tbody", {}, rows.map((row) => el("tr", {}, columns.map(([, cell, cls]) => el("td", { class: cls }, cell(row)))))));
}

function errorBox(e) { return el("p", { class: "error" }, String(e.message || e)); }

// Requests (and errors) per bucket as bars, drawn as SVG.
function barChart(series) {
  const w = 720, h = 120, n = series.length, max = Math.max(1, ...series.map((s) => s.requests));
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "chart"); svg.setAttribute("viewBox", `0 0 ${w} ${h}`); svg.setAttribute("width", "100%");
  series.forEach((s, i) => {
    for (const [value, cls] of [[s.requests, "req"], [s.errors, "err"]]) {
      const r = document.createElementNS(svg.namespaceURI, "rect");
      const bh = (value / max) * (h - 4);
      r.setAttribute("x", (i * w) / n + 1); r.setAttribute("width", w / n - 2);
      r.setAttribute("y", h - bh); r.setAttribute("height", bh); r.setAttribute("class", cls);
      svg.append(r);
    }
  });
  return svg;
}

// ---- pages --------------------------------------------------------------------------------

const pages = {
  async overview(root) {
    const windowSel = el("select", {}, el("option", { value: "1h" }, "last hour"), el("option", { value: "1d" }, "last day"));
    const body = el("div");
    const draw = async () => {
      body.replaceChildren(el("p", { class: "muted" }, "loading…"));
      const o = await api(`/overview?window=${windowSel.value}`);
      const t = o.total;
      const tile = (k, v) => el("div", { class: "tile" }, el("div", { class: "v", "data-figure": k }, v), el("div", { class: "k" }, k));
      const perColumns = (first) => [[first, (r) => r[first.toLowerCase()]], ["requests", (r) => fmt(r.requests), "n"],
        ["errors", (r) => fmt(r.errors), "n"], ["p50 ms", (r) => fmt(r.p50_ms, 1), "n"], ["p99 ms", (r) => fmt(r.p99_ms, 1), "n"],
        ["prompt tokens", (r) => fmt(r.prompt_tokens), "n"], ["completion tokens", (r) => fmt(r.completion_tokens), "n"],
        ["cost", (r) => usd(r.cost_usd), "n"]];
      body.replaceChildren(
        el("div", { class: "tiles" }, tile("requests", fmt(t.requests)), tile("errors", fmt(t.errors)),
          tile("p50 ms", fmt(t.p50_ms, 1)), tile("p99 ms", fmt(t.p99_ms, 1)),
          tile("prompt tokens", fmt(t.prompt_tokens)), tile("completion tokens", fmt(t.completion_tokens)), tile("cost", usd(t.cost_usd))),
        el("div", { class: "card" }, el("h3", {}, `Requests and errors (${o.bucket_seconds} s a bar)`), barChart(o.series)),
        el("div", { class: "card" }, el("h3", {}, "Per model"), table(perColumns("Model"), o.models)),
        el("div", { class: "card" }, el("h3", {}, o.consumers_total > o.consumers.length
          ? `Per consumer (the ${o.consumers.length} busiest of ${fmt(o.consumers_total)})` : "Per consumer"),
        table(perColumns("Consumer"), o.consumers)),
        el("p", { class: "muted" }, `From this node's latest ${fmt(o.kept)} requests (the same records as /metrics and the request log).`));
    };
    windowSel.addEventListener("change", () => draw().catch((e) => body.replaceChildren(errorBox(e))));
    root.append(el("div", { class: "row" }, el("h1", {}, "Overview"), windowSel), body);
    await draw();
  },

  async usage(root) {
    const rows = el("div");
    const more = el("button", { class: "plain", id: "usage-more" }, "More");
    let next = 0;
    // One page at a time, newest day first; the CSV export has every row.
    const load = async () => {
      const u = await api(`/usage/daily?limit=100&offset=${next}`);
      next = u.next_offset;
      more.hidden = next === null;
      rows.append(table([["day", (r) => r.day], ["consumer", (r) => r.consumer], ["key", (r) => r.key || "—"],
        ["model", (r) => r.model], ["requests", (r) => fmt(r.requests), "n"], ["errors", (r) => fmt(r.errors), "n"],
        ["prompt tokens", (r) => fmt(r.prompt_tokens), "n"], ["completion tokens", (r) => fmt(r.completion_tokens), "n"],
        ["cost", (r) => usd(r.cost_usd), "n"]], u.data));
    };
    more.addEventListener("click", () => load().catch((e) => rows.append(errorBox(e))));
    root.append(el("div", { class: "row" }, el("h1", {}, "Usage"),
      el("button", { class: "plain", id: "csv", onclick: downloadCsv }, "Export CSV")),
    el("div", { class: "card" }, rows, more));
    await load();
  },

  async keys(root) {
    const catalog = await api("/catalog");
    const detail = el("div");
    const list = el("div", { class: "card" });
    const show = (c) => showConsumer(c, detail).catch((e) => detail.replaceChildren(errorBox(e)));
    const search = el("input", { id: "consumer-search", placeholder: "search consumers" });
    const rows = el("div");
    const more = el("button", { class: "plain" }, "More");
    let next = null;
    // One page of consumers at a time (the store may hold many thousands).
    const load = async (append) => {
      const q = new URLSearchParams({ limit: "100", q: search.value });
      if (append && next) q.set("after", next);
      const page = await api(`/directory?${q}`);
      next = page.next;
      more.hidden = !next;
      const t = table([
        ["name", (c) => el("a", { href: "#keys", "data-consumer": c.name, onclick: (ev) => { ev.preventDefault(); show(c); } }, c.name)],
        ["kept in", (c) => c.source === "file" ? "config file (read-only)" : "store"],
        ["groups", (c) => c.groups.join(", ")]], page.data);
      if (append) rows.append(t); else rows.replaceChildren(t);
    };
    search.addEventListener("input", () => load(false).catch((e) => rows.replaceChildren(errorBox(e))));
    more.addEventListener("click", () => load(true).catch((e) => rows.append(errorBox(e))));
    list.append(el("h3", {}, "Consumers"), search, rows, more);
    const form = el("form", { class: "card", id: "new-consumer" },
      el("h3", {}, "New consumer"),
      el("div", { class: "row" }, el("input", { name: "name", placeholder: "name", required: true }),
        el("select", { name: "groups", multiple: true }, catalog.groups.map((g) => el("option", { value: g }, g))),
        el("input", { name: "budget", placeholder: "budget, e.g. cost_usd=5/30d" }),
        el("button", { type: "submit" }, "Create")),
      el("p", { class: "error" }));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = new FormData(form);
      try {
        await api("/consumers", { method: "POST", body: JSON.stringify({
          name: f.get("name"), groups: f.getAll("groups"), budgets: parseBudgets(f.get("budget")) }) });
        route();
      } catch (e) { form.querySelector(".error").textContent = e.message; }
    });
    root.append(el("h1", {}, "Keys and consumers"), catalog.store ? form : el("p", { class: "muted" }, "No store configured: consumers come from the config file only."), list, detail);
    await load(false);
  },

  async models(root) {
    const t = await api("/targets");
    root.append(el("h1", {}, "Models and targets"));
    for (const [name, m] of Object.entries(t.models)) {
      root.append(el("div", { class: "card" }, el("h3", {}, name, " ", el("span", { class: "muted" }, m.strategy)),
        table([["provider", (x) => x.provider], ["upstream model", (x) => x.model], ["weight", (x) => fmt(x.weight), "n"],
          ["state", (x) => el("span", { class: `badge ${x.state}` }, x.state)],
          ["latency ms", (x) => fmt(x.latency_ms ?? x.latency_estimate_ms, 1), "n"],
          ["in flight", (x) => fmt(x.in_flight), "n"], ["recent failures", (x) => fmt(x.recent_failures ?? x.failures), "n"]], m.targets)));
    }
  },

  async logs(root) {
    const filters = el("form", { class: "row", id: "log-filters" },
      el("input", { name: "consumer", placeholder: "consumer" }), el("input", { name: "model", placeholder: "model" }),
      el("select", { name: "status" }, ["", "2xx", "4xx", "5xx", "error"].map((s) => el("option", { value: s }, s || "any status"))),
      el("button", { type: "submit" }, "Filter"));
    const body = el("div", { class: "card" });
    const more = el("button", { class: "plain" }, "Older");
    let next = null;
    const load = async (append) => {
      const f = new FormData(filters);
      const q = new URLSearchParams({ limit: "100" });
      for (const k of ["consumer", "model", "status"]) if (f.get(k)) q.set(k, f.get(k));
      if (append && next !== null) q.set("before", next);
      const page = await api(`/logs?${q}`);
      next = page.next;
      more.hidden = next === null;
      const rows = table([["time", (r) => r.time], ["consumer", (r) => r.consumer || "—"], ["model", (r) => r.model || "—"],
        ["status", (r) => el("span", { class: r.status >= 400 ? "error" : "" }, r.status, r.error ? ` ${r.error}` : "")],
        ["tokens", (r) => `${fmt(r.prompt_tokens)} / ${fmt(r.completion_tokens)}`, "n"], ["cost", (r) => usd(r.cost_usd), "n"],
        ["ms", (r) => fmt(r.latency_ms, 1), "n"],
        ["payload", (r) => r.request_body || r.response_body ? el("details", {}, el("summary", {}, "show"),
          el("pre", {}, JSON.stringify({ request: r.request_body, response: r.response_body }, null, 2))) : ""]], page.data);
      if (append) body.append(rows); else body.replaceChildren(rows);
      body.dataset.query = q.toString();
    };
    filters.addEventListener("submit", (ev) => { ev.preventDefault(); load(false).catch((e) => body.replaceChildren(errorBox(e))); });
    more.addEventListener("click", () => load(true).catch((e) => body.append(errorBox(e))));
    root.append(el("h1", {}, "Logs"), filters, body, more);
    await load(false);
  },

  async playground(root) {
    const catalog = await api("/catalog");
    const answer = el("div", { class: "answer card", id: "answer" });
    const names = el("datalist", { id: "consumer-names" });
    const consumer = el("input", { name: "consumer", list: "consumer-names", placeholder: "consumer", required: true });
    // Suggestions from the directory as the name is typed (never the whole list).
    consumer.addEventListener("input", async () => {
      const page = await api(`/directory?limit=20&q=${encodeURIComponent(consumer.value)}`);
      names.replaceChildren(...page.data.map((c) => el("option", { value: c.name })));
    });
    const form = el("form", { class: "card", id: "playground" },
      el("div", { class: "row" }, consumer, names,
        el("select", { name: "route" }, catalog.routes.map((r) => el("option", { value: r }, r))),
        el("select", { name: "model" }, catalog.models.map((m) => el("option", { value: m }, m)))),
      el("textarea", { name: "prompt", rows: 4, cols: 80, placeholder: "Say something" }),
      el("div", { class: "row" }, el("button", { type: "submit" }, "Send (streamed)")));
    form.addEventListener("submit", (ev) => { ev.preventDefault(); chat(new FormData(form), answer); });
    root.append(el("h1", {}, "Playground"),
      el("p", { class: "muted" }, "Sent through the real pipeline as the chosen consumer: its models, limits and guards apply, and the request is logged."),
      form, answer);
  },
};

async function showConsumer(c, detail) {
  const readOnly = c.source === "file";
  detail.replaceChildren(el("h2", {}, c.name));
  if (readOnly) {
    detail.append(el("p", { class: "muted" }, "Defined in the config file: change it there."));
    return;
  }
  const keys = await api(`/consumers/${encodeURIComponent(c.name)}/keys?limit=1000`);
  const secretBox = el("div");
  const form = el("form", { class: "row", id: "new-key" },
    el("input", { name: "name", placeholder: "key name" }), el("input", { name: "expires_in", placeholder: "expires in (e.g. 30d)" }),
    el("input", { name: "budget", placeholder: "budget, e.g. tokens=100000/30d" }),
    el("button", { type: "submit" }, "Create key"), el("span", { class: "error" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const body = { budgets: parseBudgets(f.get("budget")) };
    if (f.get("name")) body.name = f.get("name");
    if (f.get("expires_in")) body.expires_in = f.get("expires_in");
    try {
      const key = await api(`/consumers/${encodeURIComponent(c.name)}/keys`, { method: "POST", body: JSON.stringify(body) });
      await showConsumer(c, detail);
      detail.prepend(el("div", { class: "card" }, el("p", {}, "The secret, shown this once:"), el("div", { class: "secret", id: "new-secret" }, key.secret)));
    } catch (e) { form.querySelector(".error").textContent = e.message; }
  });
  const act = (id, what, body) => async () => {
    try {
      const r = await api(`/keys/${encodeURIComponent(id)}/${what}`, { method: "POST", body: JSON.stringify(body || {}) });
      await showConsumer(c, detail);
      if (r.secret) detail.prepend(el("div", { class: "card" }, el("p", {}, "The new secret, shown this once:"), el("div", { class: "secret", id: "new-secret" }, r.secret)));
    } catch (e) { detail.append(errorBox(e)); }
  };
  const spend = (k) => async () => {
    const s = await api(`/keys/${encodeURIComponent(k.id)}/spend`);
    const lines = [...s.key_budgets.map((b) => `key: ${b.used} of ${b.limit} ${b.metric}`),
      ...s.consumer_budgets.map((b) => `consumer: ${b.used} of ${b.limit} ${b.metric}`)];
    alert(lines.length ? lines.join("\n") : "No budgets on this key or its consumer.");
  };
  detail.append(el("div", { class: "card" }, el("h3", {}, "Keys"), form, secretBox,
    table([["id", (k) => k.id], ["name", (k) => k.name || "—"], ["prefix", (k) => el("code", {}, k.prefix + "…")],
      ["status", (k) => el("span", { class: `badge ${k.status}` }, k.status)],
      ["created", (k) => k.created_at], ["last used", (k) => k.last_used_at || "never"], ["expires", (k) => k.expires_at || "never"],
      ["", (k) => el("span", { class: "row" },
        el("button", { class: "plain", onclick: act(k.id, "rotate", { grace: "1h" }), disabled: k.status === "revoked" }, "Rotate"),
        el("button", { class: "plain", "data-revoke": k.id, onclick: act(k.id, "revoke"), disabled: k.status === "revoked" }, "Revoke"),
        el("button", { class: "plain", onclick: spend(k) }, "Spend"))]], keys.data)));
}

async function chat(f, answer) {
  answer.replaceChildren();
  const q = new URLSearchParams({ consumer: f.get("consumer"), route: f.get("route") });
  const response = await fetch(`${API}/playground?${q}`, {
    method: "POST",
    headers: { ...authHeaders(), "content-type": "application/json" },
    body: JSON.stringify({ model: f.get("model"), stream: true, messages: [{ role: "user", content: f.get("prompt") || "Hello" }] }),
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    answer.append(errorBox(new Error(body.error ? `${response.status} ${body.error.code}: ${body.error.message}` : response.statusText)));
    return;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, end).trim();
      buffered = buffered.slice(end + 1);
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") { answer.dataset.done = "true"; continue; }
      const chunk = JSON.parse(data);
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) answer.append(delta.content);
    }
  }
  answer.dataset.done = "true";
}

function parseBudgets(text) {
  if (!text) return [];
  return text.split(/[ ;]+/).filter(Boolean).map((b) => {
    const m = /^(\w+)=([\d.]+)\/(\w+)$/.exec(b);
    if (!m) throw new Error(`budget ${b}: write it as metric=amount/window, e.g. tokens=100000/30d`);
    return { [m[1]]: Number(m[2]), per: m[3] };
  });
}

function downloadCsv() {
  fetch(`${API}/usage/daily?format=csv`, { headers: authHeaders() })
    .then((r) => r.blob())
    .then((blob) => {
      const a = el("a", { href: URL.createObjectURL(blob), download: "tollgate-usage.csv" });
      document.body.append(a); a.click(); a.remove();
    });
}

// ---- navigation and sign-in ---------------------------------------------------------------

async function route() {
  const name = (location.hash || "#overview").slice(1);
  const page = pages[name] || pages.overview;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.getAttribute("href") === `#${name}`);
  const root = el("section", { id: `page-${name}` });
  main().replaceChildren(root);
  try { await page(root); root.dataset.ready = "true"; } catch (e) { root.append(errorBox(e)); root.dataset.ready = "true"; }
}

async function signOut(message) {
  if (!token) await fetch("/console/oidc/sign-out", { method: "POST", headers: authHeaders() }).catch(() => {});
  token = "";
  sessionStorage.removeItem("tollgate-admin-token");
  if (message) console.warn(message);
  location.replace("/");
}

async function signIn(candidate) {
  const response = await fetch(`${API}/catalog`, { headers: authHeaders(candidate) });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(body.error ? body.error.message : response.statusText);
  }
  token = candidate;
  if (token) sessionStorage.setItem("tollgate-admin-token", token);
  document.getElementById("nav").hidden = false;
  document.getElementById("signout").hidden = false;
  window.addEventListener("hashchange", route);
  await route();
}

document.getElementById("signin").addEventListener("submit", (ev) => {
  ev.preventDefault();
  signIn(document.getElementById("token").value).catch((e) => {
    document.getElementById("signin-error").textContent = e.message;
  });
});
document.getElementById("signout").addEventListener("click", () => signOut());

// The provider's sign-in: offered when the gateway has it; an error from it comes back in the
// address; a session cookie from it signs the page in.
async function start() {
  const failed = new URLSearchParams(location.search).get("sign_in_error");
  if (failed) {
    document.getElementById("signin-error").textContent = failed;
    history.replaceState(null, "", "/");
  }
  const methods = await fetch(`${API}/sign-in`).then((r) => r.json()).catch(() => ({}));
  document.getElementById("oidc-signin").hidden = !methods.oidc;
  if (token) return signIn(token).catch(() => signOut());
  if (methods.oidc && !failed) {
    // Signed in already? Without a session this is a quiet 401.
    const probe = await fetch(`${API}/catalog`, { headers: authHeaders("") });
    if (probe.ok) await signIn("");
  }
}
start();
