"""The page of an odkit HTML report: one HTML file with its CSS and plain JavaScript inline.

The gallery's data is a JSON block inside the page (a page opened from disk cannot fetch files).
Opened with ``#selfcheck``, the page checks itself once every image has loaded or failed: it
records each image's load status, the errors it caught (``error`` events, including failed
resource loads, and ``console.error``) and the number of gallery images each class and error
filter leaves visible, as JSON in ``<pre id="selfcheck">`` (what the browser test reads). Opened
with ``#gallery-only`` it shows the gallery alone.
"""

from __future__ import annotations

import html
import json
from typing import Any

__all__ = ["page", "esc"]

_CAPTURE = """
window.__odkitErrors = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  if (t && t !== window && (t.src || t.href)) {
    window.__odkitErrors.push('failed to load ' + (t.getAttribute('src') || t.getAttribute('href')));
  } else {
    window.__odkitErrors.push(String(e.message || e));
  }
}, true);
(function () {
  var orig = console.error;
  console.error = function () {
    window.__odkitErrors.push(Array.prototype.join.call(arguments, ' '));
    return orig.apply(console, arguments);
  };
})();
"""

_CSS = """
body { font-family: system-ui, sans-serif; margin: 0; color: #222; background: #fafafa; }
nav { position: sticky; top: 0; background: #263238; padding: 6px 16px; z-index: 2; }
nav a { color: #eceff1; margin-right: 14px; text-decoration: none; font-size: 14px; }
main { padding: 0 20px 40px; max-width: 1400px; }
h1 { font-size: 22px; margin: 16px 0 4px; }
h2 { font-size: 18px; border-bottom: 1px solid #ccc; padding-bottom: 3px; margin-top: 28px; }
pre { background: #fff; border: 1px solid #ddd; padding: 8px; overflow-x: auto; font-size: 12px; max-height: 420px; }
table { border-collapse: collapse; background: #fff; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.plots img { max-width: 48%; min-width: 320px; border: 1px solid #ddd; background: #fff; margin: 4px; }
.note { color: #555; font-size: 13px; }
.filters { margin: 8px 0; font-size: 14px; }
.filters select { margin-right: 16px; }
#grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 10px; }
#grid figure { margin: 0; background: #fff; border: 1px solid #ddd; padding: 4px; }
#grid img { width: 100%; display: block; }
figcaption { font-size: 12px; padding-top: 3px; }
.tag { display: inline-block; padding: 0 5px; margin: 1px; border-radius: 3px; color: #fff; font-size: 11px; }
.legend span { margin-right: 10px; font-size: 12px; }
[hidden] { display: none !important; }
body.gallery-only section:not(#gallery) { display: none; }
"""

_JS = """
(function () {
  var data = JSON.parse(document.getElementById('gallery-data').textContent);
  var grid = document.getElementById('grid');
  var fc = document.getElementById('f-class');
  var fe = document.getElementById('f-error');
  var count = document.getElementById('count');
  var check = location.hash === '#selfcheck';
  if (location.hash === '#gallery-only') { document.body.className = 'gallery-only'; }
  function option(sel, value, text) {
    var o = document.createElement('option');
    o.value = value; o.textContent = text; sel.appendChild(o);
  }
  data.classes.forEach(function (c) { option(fc, c, c); });
  option(fe, 'any', 'any error');
  data.error_types.forEach(function (e) { option(fe, e, e + ' (' + data.error_labels[e] + ')'); });
  option(fe, 'none', 'no error');
  var cards = data.images.map(function (it) {
    var fig = document.createElement('figure');
    var img = document.createElement('img');
    img.loading = check ? 'eager' : 'lazy';
    img.src = it.src;
    img.alt = it.name;
    fig.appendChild(img);
    var cap = document.createElement('figcaption');
    cap.appendChild(document.createTextNode(it.name + ' '));
    Object.keys(it.errors).forEach(function (e) {
      var s = document.createElement('span');
      s.className = 'tag'; s.style.background = data.colors[e];
      s.textContent = e + ' ' + it.errors[e];
      cap.appendChild(s);
    });
    fig.appendChild(cap);
    grid.appendChild(fig);
    return { el: fig, it: it };
  });
  function matches(it, c, e) {
    if (c !== '' && it.classes.indexOf(c) < 0) { return false; }
    if (e === '') { return true; }
    if (e === 'any') { return it.n_errors > 0; }
    if (e === 'none') { return it.n_errors === 0; }
    return (it.errors[e] || 0) > 0;
  }
  function apply() {
    var n = 0;
    cards.forEach(function (c) {
      var ok = matches(c.it, fc.value, fe.value);
      c.el.hidden = !ok;
      if (ok) { n += 1; }
    });
    count.textContent = n + ' of ' + cards.length + ' images';
  }
  fc.addEventListener('change', apply);
  fe.addEventListener('change', apply);
  apply();
  function visible() { return grid.querySelectorAll('figure:not([hidden])').length; }
  function pick(sel, value) { sel.value = value; sel.dispatchEvent(new Event('change')); }
  function selfcheck() {
    var imgs = Array.prototype.slice.call(document.images);
    Promise.all(imgs.map(function (im) {
      if (im.complete) { return Promise.resolve(); }
      return new Promise(function (r) { im.addEventListener('load', r); im.addEventListener('error', r); });
    })).then(function () {
      var res = { images: [], filters: {}, errors: [] };
      imgs.forEach(function (im) {
        res.images.push({ src: im.getAttribute('src'), ok: im.complete && im.naturalWidth > 0 });
      });
      Array.prototype.forEach.call(fc.options, function (o) {
        pick(fc, o.value); res.filters['class:' + o.value] = visible();
      });
      pick(fc, '');
      Array.prototype.forEach.call(fe.options, function (o) {
        pick(fe, o.value); res.filters['error:' + o.value] = visible();
      });
      pick(fe, '');
      res.count_text = count.textContent;
      res.errors = window.__odkitErrors;
      var pre = document.createElement('pre');
      pre.id = 'selfcheck';
      pre.textContent = JSON.stringify(res);
      document.body.appendChild(pre);
    });
  }
  if (check) { selfcheck(); }
})();
"""


def esc(text: Any) -> str:
    """HTML-escaped ``str(text)``."""
    return html.escape(str(text), quote=True)


def page(title: str, subtitle: str, sections: list[tuple[str, str, str]], gallery: dict[str, Any]) -> str:
    """The report page: ``sections`` are (id, heading, inner HTML) in order; ``gallery`` the JSON of
    the gallery (``images``, ``classes``, ``error_types``, ``error_labels``, ``colors``)."""
    nav = "".join(f'<a href="#{sid}">{esc(head)}</a>' for sid, head, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{esc(head)}</h2>{inner}</section>' for sid, head, inner in sections)
    blob = json.dumps(gallery).replace("</", "<\\/")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><script>{_CAPTURE}</script><style>{_CSS}</style></head>\n"
        f"<body><nav>{nav}</nav><main><h1>{esc(title)}</h1><p class=\"note\">{esc(subtitle)}</p>\n{body}</main>\n"
        f'<script id="gallery-data" type="application/json">{blob}</script>\n<script>{_JS}</script>\n</body></html>\n'
    )
