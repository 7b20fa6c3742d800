"use strict";
(() => {
  const form = document.getElementById("connect");
  const token = document.getElementById("token");
  const server = document.getElementById("server");
  const error = document.getElementById("error");
  const go = document.getElementById("go");
  server.value = location.host;
  const label = go.textContent;
  // The plain-http origin the person agreed to send the token to, after a warning.
  let plainAgreed = null;
  server.addEventListener("input", () => {
    plainAgreed = null;
    go.textContent = label;
  });

  const show = (text) => {
    error.textContent = text;
    error.hidden = !text;
  };

  // The address typed, as an origin: "host:port" takes this page's scheme.
  const originOf = (address) => {
    const text = address.trim() || location.host;
    const withScheme = /^https?:\/\//i.test(text) ? text : `${location.protocol}//${text}`;
    return new URL(withScheme).origin;
  };

  const check = async (value) => {
    const url = `/api/sessions?limit=1&token=${encodeURIComponent(value)}`;
    let response;
    try {
      response = await fetch(url, {
        cache: "no-store",
        credentials: "same-origin",
        signal: AbortSignal.timeout(15000),
      });
    } catch (err) {
      return `Could not reach the relay at ${location.host}: ${err.message || err}.`;
    }
    const type = response.headers.get("Content-Type") || "";
    if (response.ok && type.includes("application/json")) return null;
    const body = (await response.text()).trim().slice(0, 500);
    if (response.ok) {
      return `The client answered, but not as ARP command mode (HTTP ${response.status}, ` +
        `${type || "no type"}). Is arpc running with --command-mode?`;
    }
    const said = body ? `: “${body}”` : "";
    return `This token did not open a console.\nThe relay answered ${response.status}${said}.\n` +
      "Check the token arpc printed when it started (its client id) and that arpc is running.";
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = token.value.trim();
    if (!value) {
      show("Enter a token.");
      token.focus();
      return;
    }
    let origin;
    try {
      origin = originOf(server.value);
    } catch {
      show(`"${server.value}" is not a server address (try host:port).`);
      server.focus();
      return;
    }
    const target = `${origin}/?token=${encodeURIComponent(value)}`;
    if (origin !== location.origin) {
      // From an https page, an http:// address would carry the token in clear: ask first.
      const plain = location.protocol === "https:" && origin.startsWith("http:");
      if (plain && plainAgreed !== origin) {
        plainAgreed = origin;
        show(
          `${origin} is plain http: the token would cross the network unencrypted, readable ` +
            "and reusable by anyone on the way. Type https:// (or host:port alone), or press " +
            "the button again to send it anyway.",
        );
        go.textContent = "Send over http anyway";
        server.focus();
        return;
      }
      location.assign(target); // another relay: it will answer for itself
      return;
    }
    go.disabled = true;
    show("");
    const problem = await check(value);
    go.disabled = false;
    if (problem) {
      show(problem);
      token.focus();
      token.select();
      return;
    }
    location.assign(target);
  });
})();
