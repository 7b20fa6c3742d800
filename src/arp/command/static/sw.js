/*
 * The console's service worker: shows arpc's Web Push notes while no console tab is open
 * (arp/command/push.py sends them; push.js subscribes). Served at /sw.js so its scope is the
 * whole console. A note is JSON {event, session_id, title, message, url}, as --notify-url posts.
 */
"use strict";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

/** Where a click goes: the note's url when it is this origin's, else the run in this scope. */
function target(note) {
  const scope = new URL(self.registration.scope);
  if (typeof note.url === "string") {
    try {
      const url = new URL(note.url);
      if (url.origin === scope.origin) return url.href;
    } catch (err) {
      // Not a URL: the run's page in this scope below.
    }
  }
  if (typeof note.session_id === "string" && note.session_id) {
    return new URL(`#/run/${encodeURIComponent(note.session_id)}`, scope).href;
  }
  return scope.href;
}

function read(data) {
  if (!data) return {};
  try {
    const note = data.json();
    return note && typeof note === "object" ? note : {};
  } catch (err) {
    return { title: data.text() };
  }
}

self.addEventListener("push", (event) => {
  const note = read(event.data);
  const asking = note.event === "approval_requested";
  const title = String(note.title || "ARP").slice(0, 300);
  const options = {
    body: String(note.message || "").slice(0, 300),
    icon: new URL("console/icon.svg", self.registration.scope).href,
    data: { url: target(note), event: note.event || null, session_id: note.session_id || null },
    requireInteraction: asking,
  };
  if (typeof note.session_id === "string") options.tag = `${note.event}:${note.session_id}`;
  event.waitUntil(self.registration.showNotification(title, options));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = (event.notification.data && event.notification.data.url) || self.registration.scope;
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      for (const client of windows) {
        if (new URL(client.url).origin !== new URL(url).origin) continue;
        try {
          const focused = await client.focus();
          await (focused || client).navigate(url);
          return;
        } catch (err) {
          // An uncontrolled or closing tab: open a new one below.
        }
      }
      await self.clients.openWindow(url);
    })(),
  );
});
