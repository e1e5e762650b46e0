// airlock's operator console: plain JavaScript, no libraries, no inline script (the page's CSP
// allows scripts from this origin only). Text reaches the page through textContent, never as HTML.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#1d4e89", "#b3541e", "#2e7d32", "#8e24aa", "#c62828", "#00838f"];
  const REFRESH_MS = { engines: 3000, models: 5000, keys: 3000, traffic: 1000, audit: 2000, store: 30000 };
  let csrf = null;
  let view = null;
  let timer = null;
  let auditFilters = "";

  const $ = (id) => document.getElementById(id);

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      if (cell instanceof Node) td.appendChild(cell);
      else td.textContent = cell === null || cell === undefined ? "–" : String(cell);
      tr.appendChild(td);
    }
    return tr;
  }

  function fill(tableId, rows, empty) {
    const body = $(tableId).tBodies[0];
    body.replaceChildren(...rows);
    if (!rows.length) {
      const cols = $(tableId).tHead.rows[0].cells.length;
      const td = el("td", empty || "nothing yet", "empty");
      td.colSpan = cols;
      const tr = document.createElement("tr");
      tr.appendChild(td);
      body.appendChild(tr);
    }
  }

  function when(ts) {
    if (!ts) return "–";
    return new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19);
  }

  function duration(s) {
    if (s === null || s === undefined) return "–";
    if (s < 60) return Math.round(s) + " s";
    if (s < 3600) return Math.round(s / 60) + " min";
    if (s < 86400) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " d";
  }

  function ms(s) {
    return s === null || s === undefined ? "–" : (s * 1000).toFixed(s < 0.01 ? 2 : 0) + " ms";
  }

  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return n.toFixed(i ? 1 : 0) + " " + units[i];
  }

  function say(text) { $("status").textContent = text; }

  async function api(path, options) {
    const init = { method: "GET", headers: {}, credentials: "same-origin", cache: "no-store" };
    if (options && options.body !== undefined) {
      init.method = "POST";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    if (init.method === "POST" && csrf) init.headers["X-CSRF-Token"] = csrf;
    const response = await fetch("/console/api/" + path, init);
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (response.status === 401 && path !== "login") {
      showLogin(path === "session" ? "" : "Your session ended: log in again.");
      throw new Error("logged out");
    }
    if (!response.ok) {
      const message = data && data.error ? data.error.message : response.status + " " + response.statusText;
      throw new Error(message);
    }
    return data;
  }

  // -- login ------------------------------------------------------------------------------------

  function showLogin(message) {
    csrf = null;
    stop();
    $("app").hidden = true;
    $("logout").hidden = true;
    $("who").textContent = "";
    $("login-view").hidden = false;
    $("login-error").textContent = message || "";
    $("login-key").focus();
  }

  function showApp(session) {
    csrf = session.csrf;
    $("login-view").hidden = true;
    $("app").hidden = false;
    $("logout").hidden = false;
    $("who").textContent = "Logged in with key " + session.key + " until " + when(session.expires_at) + " UTC";
    open((location.hash || "#engines").slice(1));
  }

  async function login(event) {
    event.preventDefault();
    const input = $("login-key");
    $("login-error").textContent = "";
    try {
      const session = await api("login", { body: { key: input.value } });
      input.value = "";
      showApp(session);
    } catch (e) {
      $("login-error").textContent = e.message;
      input.focus();
    }
  }

  async function logout() {
    try { await api("logout", { body: {} }); } catch (e) { /* the session is gone either way */ }
    history.replaceState(null, "", "/console");
    showLogin("Logged out.");
  }

  // -- views ------------------------------------------------------------------------------------

  const loaders = {
    async engines() {
      const data = await api("engines");
      fill("engines-table", data.engines.map((e) => {
        let error = null;
        if (e.last_error) {
          error = document.createElement("details");
          error.appendChild(el("summary", e.last_error));
          error.appendChild(el("pre", e.log_tail || "(the log is empty)"));
        }
        return row([e.name, e.kind + (e.version && e.version !== e.kind ? " (" + e.version + ")" : ""), el("span", e.state, "state " + e.state),
          duration(e.uptime_s), e.restarts, e.digest ? el("code", e.digest.slice(0, 23) + "…") : null, error]);
      }), "no engines");
    },
    async models() {
      const data = await api("models");
      fill("models-table", data.models.map((m) => row([m.name, m.aliases.join(", ") || "–", m.kind,
        m.ready ? "yes" : "no", m.keys.length ? m.keys.join(", ") : "no key"])), "no models");
    },
    async keys() {
      const data = await api("keys");
      const scopes = $("key-scopes");
      if (!scopes.querySelector("input")) {
        for (const scope of data.scopes) {
          const id = "scope-" + scope;
          const box = document.createElement("input");
          box.type = "checkbox"; box.id = id; box.name = "scopes"; box.value = scope;
          const label = el("label", scope); label.htmlFor = id;
          const wrap = el("span", null, "check"); wrap.append(box, label);
          scopes.appendChild(wrap);
        }
      }
      fill("keys-table", data.keys.map((k) => {
        const limits = Object.entries(k.limits).map(([n, v]) => n + " " + v).join(", ") || "–";
        let action = null;
        if (!k.revoked_at) {
          action = el("button", "Revoke");
          action.type = "button";
          action.setAttribute("aria-label", "Revoke key " + k.name);
          action.addEventListener("click", () => revoke(k.name));
        }
        const u = k.usage;
        return row([k.name, k.scopes.join(", "), k.models ? k.models.join(", ") : "every model", limits,
          k.expires_at ? when(k.expires_at) : "never", u.requests_today + " / " + u.requests_total,
          u.tokens_today + " / " + u.tokens_total, k.revoked_at ? "revoked " + when(k.revoked_at) : "active", action]);
      }), "no keys");
    },
    async traffic() {
      const data = await api("traffic?seconds=300");
      drawTraffic(data.points);
    },
    async audit() {
      const data = await api("audit?limit=100" + auditFilters);
      if (!data.enabled) {
        fill("audit-table", [], "the gateway has no audit log (gateway.audit_log)");
        return;
      }
      fill("audit-table", data.lines.map((l) => {
        const what = l.event === "admin" ? (l.action || "") + (l.target ? " " + l.target : "") : (l.method ? l.method + " " + l.route : "");
        return row([l.seq, l.ts ? String(l.ts).replace("T", " ").replace("Z", "") : null, l.event, l.key,
          what, l.model, l.status, l.ms]);
      }), "no matching lines");
    },
    async store() {
      const data = await api("store");
      $("store-path").textContent = data.store ? "Store: " + data.store + (data.error ? " — " + data.error : "") : "No store is known to this gateway.";
      fill("store-models", data.models.map((m) => row([m.name, m.repo, el("code", (m.commit || "").slice(0, 12)),
        m.files, bytes(m.size), el("code", m.bundle.slice(0, 12)), m.installed])), "no models");
      fill("store-images", data.images.map((i) => row([i.reference, el("code", i.digest.slice(0, 19) + "…"), i.platform,
        bytes(i.size), i.installed, i.targets.join(", ") || "–"])), "no images");
      fill("store-bundles", data.bundles.map((b) => row([el("code", b.id.slice(0, 12)), b.created, b.installed,
        b.signed_by || "unsigned", b.airlock_version])), "no bundles");
    },
  };

  async function refresh() {
    if (!view) return;
    try {
      await loaders[view]();
      say("Updated " + new Date().toLocaleTimeString());
    } catch (e) {
      if (e.message !== "logged out") say("Could not update: " + e.message);
    }
  }

  function stop() {
    if (timer) clearInterval(timer);
    timer = null;
    view = null;
  }

  function open(name) {
    if (!Object.hasOwn(loaders, name)) name = "engines"; // "#constructor" is no view
    stop();
    view = name;
    for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== "view-" + name;
    for (const link of document.querySelectorAll("[data-view]")) {
      if (link.dataset.view === name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    refresh();
    timer = setInterval(refresh, REFRESH_MS[name]);
  }

  // -- keys -------------------------------------------------------------------------------------

  async function createKey(event) {
    event.preventDefault();
    const form = $("key-form");
    const f = new FormData(form);
    const body = { name: f.get("name"), models: f.get("models") || null, owner: f.get("owner"), team: f.get("team"),
      expires: f.get("expires"), rpm: f.get("rpm"), tpm: f.get("tpm"), tpd: f.get("tpd"), concurrency: f.get("concurrency") };
    const scopes = f.getAll("scopes");
    body.scopes = scopes.length ? scopes : null;
    $("key-error").textContent = "";
    try {
      const made = await api("keys", { body });
      form.reset();
      $("secret-name").textContent = made.key.name;
      $("secret-value").value = made.token;
      $("secret-box").hidden = false;
      $("secret-value").focus();
      $("secret-value").select();
      say("Key " + made.key.name + " created");
      await loaders.keys();
    } catch (e) {
      $("key-error").textContent = e.message;
    }
  }

  async function revoke(name) {
    if (!window.confirm("Revoke the key " + name + "? Requests with it are refused at once.")) return;
    try {
      await api("keys/revoke", { body: { name } });
      say("Key " + name + " revoked");
      await loaders.keys();
    } catch (e) {
      say("Could not revoke " + name + ": " + e.message);
    }
  }

  // -- traffic plots ----------------------------------------------------------------------------

  const CHARTS = [
    { id: "rps", title: "Requests per second", value: (m) => m.rps, unit: "/s" },
    { id: "latency", title: "Latency p50 (solid) and p99 (dashed)", value: (m) => m.p50_s, second: (m) => m.p99_s, unit: "s" },
    { id: "ttft", title: "Time to first token, p50", value: (m) => m.ttft_p50_s, unit: "s" },
    { id: "tps", title: "Tokens per second", value: (m) => m.tokens_per_s, unit: "/s" },
    { id: "inflight", title: "Requests in flight", value: (m) => m.in_flight, unit: "" },
  ];

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  function label(v, unit) {
    if (unit === "s") return ms(v);
    return (v >= 100 ? Math.round(v) : Math.round(v * 10) / 10) + unit;
  }

  function chart(spec, points, models) {
    const W = 600, H = 170, L = 56, R = 8, T = 10, B = 22;
    const figure = el("figure", null, "chart");
    const caption = el("figcaption", spec.title);
    caption.id = "chart-" + spec.id;
    const plot = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-labelledby": caption.id });
    // the x axis spans what the ring holds: at least a minute, at most five
    const t1 = points.length ? points[points.length - 1].t : 0;
    const span = points.length ? Math.min(300, Math.max(60, t1 - points[0].t)) : 300;
    const t0 = t1 - span;
    let max = 0;
    for (const p of points) for (const name of models) {
      const m = p.models[name];
      if (!m) continue;
      for (const v of [spec.value(m), spec.second ? spec.second(m) : null]) if (v !== null && v !== undefined) max = Math.max(max, v);
    }
    max = max > 0 ? max * 1.1 : 1;
    const x = (t) => L + ((t - t0) / span) * (W - L - R);
    const y = (v) => T + (1 - v / max) * (H - T - B);
    for (const f of [0, 0.5, 1]) {
      plot.appendChild(svg("line", { x1: L, x2: W - R, y1: y(max * f), y2: y(max * f), class: "grid" }));
      const tick = svg("text", { x: L - 4, y: y(max * f) + 4, class: "tick", "text-anchor": "end" });
      tick.textContent = label(max * f, spec.unit);
      plot.appendChild(tick);
    }
    const ago = svg("text", { x: L, y: H - 6, class: "tick" });
    ago.textContent = span >= 120 ? Math.round(span / 60) + " min ago" : Math.round(span) + " s ago";
    plot.appendChild(ago);
    const nowText = svg("text", { x: W - R, y: H - 6, class: "tick", "text-anchor": "end" });
    nowText.textContent = "now";
    plot.appendChild(nowText);
    models.forEach((name, i) => {
      for (const [pick, dashed] of [[spec.value, false], [spec.second, true]]) {
        if (!pick) continue;
        const coords = [];
        for (const p of points) {
          const m = p.models[name];
          const v = m ? pick(m) : null;
          if (v !== null && v !== undefined) coords.push(x(p.t).toFixed(1) + "," + y(v).toFixed(1));
        }
        if (!coords.length) continue;
        const line = svg("polyline", { points: coords.join(" "), fill: "none", stroke: COLORS[i % COLORS.length],
          "stroke-width": 2, class: dashed ? "dashed" : "" });
        plot.appendChild(line);
      }
    });
    figure.append(caption, plot);
    return figure;
  }

  function drawTraffic(points) {
    const models = [];
    for (const p of points) for (const name of Object.keys(p.models)) if (!models.includes(name)) models.push(name);
    const legend = el("ul", null, "legend");
    models.forEach((name, i) => {
      const item = el("li");
      const swatch = el("span", null, "swatch c" + (i % COLORS.length));
      item.append(swatch, document.createTextNode(name));
      legend.appendChild(item);
    });
    $("charts").replaceChildren(legend, ...CHARTS.map((spec) => chart(spec, points, models)));
    const last = points.length ? points[points.length - 1].models : {};
    fill("traffic-table", Object.entries(last).map(([name, m]) => row([name, m.rps, ms(m.p50_s), ms(m.p99_s),
      ms(m.ttft_p50_s), m.tokens_per_s, m.in_flight, m.requests_total])), "no traffic yet");
  }

  // -- audit ------------------------------------------------------------------------------------

  function filterAudit(event) {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const [k, v] of new FormData($("audit-form"))) if (v) params.set(k, v);
    auditFilters = params.toString() ? "&" + params.toString() : "";
    refresh();
  }

  async function verifyChain() {
    const state = $("chain-state");
    state.textContent = "checking…";
    state.className = "";
    try {
      const r = await api("audit/verify");
      if (!r.enabled) { state.textContent = "no audit log configured"; return; }
      if (r.ok) {
        state.textContent = "chain intact: " + r.lines + " lines in " + r.files + " file(s), seq " + r.first_seq + "–" + r.last_seq;
        state.className = "ok";
      } else {
        state.textContent = "chain BROKEN: " + r.problems.join("; ");
        state.className = "bad";
      }
    } catch (e) {
      state.textContent = "could not check: " + e.message;
    }
  }

  // -- start ------------------------------------------------------------------------------------

  async function start() {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    $("key-form").addEventListener("submit", createKey);
    $("secret-done").addEventListener("click", () => {
      $("secret-value").value = "";
      $("secret-box").hidden = true;
      $("key-name").focus();
    });
    $("audit-form").addEventListener("submit", filterAudit);
    $("verify").addEventListener("click", verifyChain);
    window.addEventListener("hashchange", () => { if (csrf) open(location.hash.slice(1)); });
    try {
      showApp(await api("session"));
    } catch (e) {
      if (e.message !== "logged out") showLogin(e.message);
    }
  }

  document.addEventListener("DOMContentLoaded", start);
})();
