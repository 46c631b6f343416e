// icons.js: the pages' icons as inline SVG, drawn with the text colour —
// never emoji, which a classroom PC without an emoji font shows as a box.
// icons.el(name) returns an <svg> element (aria-hidden: the text beside it,
// or the button's aria-label, says what it means).
"use strict";

window.icons = (() => {
  // Paths on a 24×24 grid, stroked.
  const paths = {
    hand: "M7 11V5.5a1.5 1.5 0 0 1 3 0V10M10 10V4a1.5 1.5 0 0 1 3 0v6M13 10V5a1.5 1.5 0 0 1 3 0v6M16 11V8a1.5 1.5 0 0 1 3 0v6a7 7 0 0 1-7 7h-1a6 6 0 0 1-5-2.7L3.5 14a1.5 1.5 0 0 1 2.4-1.8L7 13.5",
    screen: "M3 5h18v11H3zM8 20h8M12 16v4",
    mic: "M12 3a3 3 0 0 1 3 3v5a3 3 0 0 1-6 0V6a3 3 0 0 1 3-3zM6 11a6 6 0 0 0 12 0M12 17v4",
    micOff: "M12 3a3 3 0 0 1 3 3v5a3 3 0 0 1-6 0V6a3 3 0 0 1 3-3zM6 11a6 6 0 0 0 12 0M12 17v4M4 4l16 16",
    down: "M12 4v12M7 11l5 5 5-5M5 20h14",
    check: "M5 12l5 5 9-10",
    cross: "M6 6l12 12M18 6L6 18",
    stage: "M4 20h16M6 20V10l6-5 6 5v10",
  };
  const NS = "http://www.w3.org/2000/svg";

  // el is the icon called name as an <svg> element.
  function el(name, size) {
    const s = document.createElementNS(NS, "svg");
    s.setAttribute("viewBox", "0 0 24 24");
    s.setAttribute("width", String(size || 18));
    s.setAttribute("height", String(size || 18));
    s.setAttribute("aria-hidden", "true");
    s.setAttribute("class", "icon icon-" + name);
    const p = document.createElementNS(NS, "path");
    p.setAttribute("d", paths[name] || "");
    p.setAttribute("fill", "none");
    p.setAttribute("stroke", "currentColor");
    p.setAttribute("stroke-width", "2");
    p.setAttribute("stroke-linecap", "round");
    p.setAttribute("stroke-linejoin", "round");
    s.append(p);
    return s;
  }

  // apply puts the icon named by each data-icon attribute under root
  // before the element's text.
  function apply(root) {
    for (const e of (root || document).querySelectorAll("[data-icon]")) {
      if (!e.querySelector(":scope > svg.icon")) e.prepend(el(e.dataset.icon), " ");
    }
  }
  document.addEventListener("DOMContentLoaded", () => apply(document));

  return Object.freeze({ el, apply, names: Object.keys(paths) });
})();
