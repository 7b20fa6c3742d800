// The relay dashboard: fetches /api/clients every few seconds and shows each client as a card.
// No framework, no CDN, no inline script (the page's CSP allows this origin only); text is set
// with textContent, never parsed as HTML.
"use strict";

(function () {
  const token = new URLSearchParams(location.search).get("token");
  const refresh = Number(document.body.dataset.refresh) || 3000;
  const list = document.getElementById("clients");
  const summary = document.getElementById("summary");
  const problem = document.getElementById("problem");
  const empty = document.getElementById("empty");
  if (token) {
    document.getElementById("metrics").href = "/metrics?token=" + encodeURIComponent(token);
  }

  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function ago(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 5) return "just now";
    if (seconds < 120) return seconds + " s ago";
    if (seconds < 7200) return Math.round(seconds / 60) + " min ago";
    return Math.round(seconds / 3600) + " h ago";
  }

  function row(dl, label, value) {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = value;
    dl.append(dt, dd);
  }

  function card(c, now) {
    const li = document.createElement("li");
    li.className = "client";
    li.dataset.client = c.client_id;
    const h2 = document.createElement("h2");
    const name = document.createElement("code");
    name.textContent = c.client_id;
    const status = document.createElement("span");
    status.className = "status " + (c.online ? "online" : "offline");
    status.textContent = c.online ? "online" : "offline";
    h2.append(name, status);
    const dl = document.createElement("dl");
    row(dl, "Last seen", c.online ? ago(now - c.last_seen) : "offline " + ago(c.offline_for));
    row(dl, "Pool", c.pool + " idle tunnel" + (c.pool === 1 ? "" : "s"));
    row(dl, "Open", c.open + " connection" + (c.open === 1 ? "" : "s"));
    row(dl, "Served", String(c.connections));
    row(dl, "Traffic", "↓ " + bytes(c.bytes_in) + " in · ↑ " + bytes(c.bytes_out) + " out");
    row(dl, "TCP ports", c.tcp_ports.length ? c.tcp_ports.join(", ") : "none");
    li.append(h2, dl);
    return li;
  }

  async function load() {
    try {
      const headers = token ? { Authorization: "Bearer " + token } : {};
      const reply = await fetch("/api/clients", { headers, cache: "no-store" });
      if (!reply.ok) {
        let message = "HTTP " + reply.status;
        try { message = (await reply.json()).error.message; } catch (e) { /* not JSON */ }
        throw new Error(message);
      }
      const data = await reply.json();
      const online = data.clients.filter((c) => c.online).length;
      let where = "";
      if (data.node) {
        const alive = data.node.peers.filter((p) => p.alive && p.node_id !== data.node.node_id);
        where = "node " + data.node.node_id + " (peers: " +
          (alive.length ? alive.map((p) => p.node_id).join(", ") : "none") +
          (data.node.redis_up ? "" : "; Redis not answering") + ") · ";
      }
      summary.textContent = where + online + " online, " + (data.clients.length - online) +
        " offline, " + data.public_connections + " public connection" +
        (data.public_connections === 1 ? "" : "s") + " open";
      list.replaceChildren(...data.clients.map((c) => card(c, data.now)));
      empty.hidden = data.clients.length > 0;
      problem.hidden = true;
    } catch (e) {
      problem.textContent = "Cannot reach the relay's admin port (" + e.message +
        "); trying again in a few seconds.";
      problem.hidden = false;
    } finally {
      setTimeout(load, refresh);
    }
  }

  load();
})();
