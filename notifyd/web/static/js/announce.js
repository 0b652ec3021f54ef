// Screen-reader announcements through two live regions in index.html: polite for
// ordinary news, assertive for urgent (priority 5) notifications.

const KEEP = 3;

export function announce(message, { assertive = false } = {}) {
  const region = document.getElementById(assertive ? "announce-assertive" : "announce-polite");
  if (!region) return;
  const line = document.createElement("p");
  line.textContent = message;
  region.append(line);
  while (region.childElementCount > KEEP) region.firstElementChild.remove();
}

/** The unread count in the title ("(3) notifyd") and as the app badge. */
export function showUnreadCount(count, { more = false } = {}) {
  const label = more ? `${count}+` : String(count);
  document.title = count > 0 ? `(${label}) notifyd` : "notifyd";
  const nav = document.getElementById("nav-unread");
  if (nav) {
    const unread = document.createElement("span");
    unread.className = "sr-only";
    unread.textContent = " unread";
    if (count > 0) nav.replaceChildren(label, unread);
    else nav.replaceChildren();
    nav.hidden = count === 0;
  }
  try {
    if (count > 0 && "setAppBadge" in navigator) navigator.setAppBadge(count).catch(() => {});
    else if ("clearAppBadge" in navigator) navigator.clearAppBadge().catch(() => {});
  } catch {
    // badges are a nicety; some browsers expose the API but refuse outside installed apps
  }
}
