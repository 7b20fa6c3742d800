/*
 * Web Push for the console (arp/command/push.py): the service worker /sw.js shows arpc's notes
 * while no console tab is open. "Notify me" subscribes with arpc's VAPID key and hands arpc the
 * subscription; console.js keeps using the Notification API while it is open.
 */

const SW_URL = "/sw.js";

let policy = null;

/** The worker's URL as Trusted Types want it (the CSP allows the one policy "arp-sw"). */
function workerUrl() {
  if (!window.trustedTypes) return SW_URL;
  policy ??= window.trustedTypes.createPolicy("arp-sw", {
    createScriptURL: (url) => {
      if (url !== SW_URL) throw new TypeError(`not the console's service worker: ${url}`);
      return url;
    },
  });
  return policy.createScriptURL(SW_URL);
}

/** Whether this browser can take pushes here (a secure origin with service workers and Push). */
export function pushAvailable() {
  return window.isSecureContext && "serviceWorker" in navigator && "PushManager" in window;
}

function keyBytes(text) {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4);
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

function sameKey(subscription, key) {
  const known = subscription.options && subscription.options.applicationServerKey;
  if (!known) return false;
  const a = new Uint8Array(known);
  return a.length === key.length && a.every((byte, i) => byte === key[i]);
}

/**
 * Subscribes this browser (permission granted already) and tells arpc; a subscription made
 * with another key (arpc's data dir was reset) is replaced. `api` is console.js's request.
 */
export async function subscribePush(api) {
  const registration = await navigator.serviceWorker.register(workerUrl(), { scope: "/" });
  const { public_key: text } = await api("/api/push/key");
  const key = keyBytes(text);
  let subscription = await registration.pushManager.getSubscription();
  if (subscription && !sameKey(subscription, key)) {
    await subscription.unsubscribe();
    subscription = null;
  }
  subscription ??= await registration.pushManager.subscribe({
    userVisibleOnly: true,
    applicationServerKey: key,
  });
  await api("/api/push/subscriptions", { method: "POST", body: subscription.toJSON() });
  return subscription;
}

/** On load: a browser that allowed notifications renews its subscription with arpc (quietly). */
export async function renewPush(api) {
  if (!pushAvailable() || !("Notification" in window) || Notification.permission !== "granted") return;
  try {
    await subscribePush(api);
  } catch (err) {
    // Push is a convenience: the Notification API still works while the console is open.
  }
}
