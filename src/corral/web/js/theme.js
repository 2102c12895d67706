// Light and dark themes: data-theme on <html>, from the user's saved choice or else the
// system's prefers-color-scheme (followed live until the user picks one).

const STORE = "corral.theme";
const media = window.matchMedia("(prefers-color-scheme: dark)");

export function saved() {
  const t = localStorage.getItem(STORE);
  return t === "light" || t === "dark" ? t : null;
}

export function current() {
  return document.documentElement.dataset.theme || (media.matches ? "dark" : "light");
}

function apply(theme) {
  document.documentElement.dataset.theme = theme;
  for (const btn of document.querySelectorAll("[data-theme-toggle]")) {
    const next = theme === "dark" ? "light" : "dark";
    btn.setAttribute("aria-label", `Switch to ${next} theme`);
    btn.setAttribute("title", `Switch to ${next} theme`);
    btn.textContent = theme === "dark" ? "☀ Light" : "☾ Dark";
  }
}

/** Set the theme from storage or the system; keep following the system if unsaved. */
export function init() {
  apply(saved() || (media.matches ? "dark" : "light"));
  media.addEventListener("change", () => { if (!saved()) apply(media.matches ? "dark" : "light"); });
}

/** Flip the theme and remember the choice. */
export function toggle() {
  const next = current() === "dark" ? "light" : "dark";
  localStorage.setItem(STORE, next);
  apply(next);
  return next;
}
