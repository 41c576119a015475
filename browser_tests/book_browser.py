"""Read the built book in a real browser, page by page, as a reader meets it.

The tests of this package (``make book-check``) use this module to serve ``_build/html`` on
127.0.0.1, open every page of the table of contents in headless Chromium (Debian's
``/usr/bin/chromium``, driven by Playwright), and collect what a reader would see: console
errors, images that do not load, cell outputs that show a traceback or noise, maths that
MathJax did not typeset, widgets without their saved state, broken links, launch buttons that
point elsewhere, Chinese characters drawn as empty boxes, and language switches that do not lead
to the same page in the other edition. Each page is also saved as a screenshot.

The book has two editions (``EDITIONS``): the English one at the root of ``_build/html`` and the
Chinese one, a second Sphinx project built from ``zh/``, in ``_build/html/zh``. A page is named by
its document name in the served folder: ``chapters/ch1/02_why_clip`` is the English page and
``zh/chapters/ch1/02_why_clip`` the same page in Chinese (``edition_of`` splits the two apart).

The pages load MathJax and the Jupyter widget manager from public CDNs. The check runs with no
network, so it answers those requests with local copies of the same npm packages (the
"stand-ins" below), fetched once by ``make browser-deps`` with ``npm pack``
(``python browser_tests/book_browser.py install-assets DIR``); nothing is downloaded while the
check runs. Any other request leaving 127.0.0.1 is refused and reported.
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import hashlib
import html.parser
import http.server
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
# Root in a container: no sandbox; no GPU; and none of Chromium's own background traffic, which
# this machine's closed network would refuse (and report as failed requests).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 900}
# A page is never screenshot taller than this (the API reference is several metres long).
SCREENSHOT_MAX_HEIGHT = 30_000
# The glyph check draws each distinct CJK character once per font it is shown in. Past this many
# (font, character) pairs on a page it samples, evenly through the page, but never fewer than
# GLYPHS_PER_FONT characters of any font (or all of them).
MAX_GLYPHS = 3000
GLYPHS_PER_FONT = 200

# Console messages that come from the theme itself, not from the book, and that the book cannot
# change. pydata-sphinx-theme logs this once, on a reader's very first visit (empty localStorage),
# then stores the mode; every page here is opened in a fresh profile, so each one would show it.
KNOWN_THEME_MESSAGES = ("Got invalid theme mode: . Resetting to auto.",)
# The widget manager (html-manager 1.0.6, the version MyST-NB loads) injects Font Awesome's
# @font-face rules with addresses relative to the page, so the browser asks the book for
# <page folder>/@jupyter-widgets/html-manager/dist/<hash>.woff2 (.woff, .ttf) and gets 404. The
# book's widgets show no icons, so a reader sees nothing, and the check does not count these
# requests as defects. Any other failed request is one.
WIDGET_ICON_FONTS = re.compile(r"^404 .*@jupyter-widgets/html-manager/dist/[0-9a-f]+\.(woff2?|ttf|eot)$")

# Maths: a TeX command between single dollars, or a double dollar, left in the text means the
# Markdown parser did not see it as maths (and MathJax, which only reads \( \) and \[ \], skips it).
RAW_MATH = re.compile(r"\$\$|\$(?=\S)[^$\n]*\\[A-Za-z]+[^$\n]*\$")
# Cell output text a reader should never see: a traceback, a warning printed by Python's warnings
# module (file:line: SomethingWarning:), a progress bar, ANSI colour codes, a bare object repr.
OUTPUT_NOISE = {
    "a traceback": re.compile(r"Traceback \(most recent call last\)"),
    "a Python warning": re.compile(r"^\S+:\d+: \w*Warning:|^\s*warnings\.warn\(", re.M),
    "a progress bar": re.compile(r"\d+%\|[^|\n]*\|\s*\d+/\d+"),
    "raw ANSI escape codes": re.compile(r"\x1b\[|\[\d{1,3}(;\d{1,3})*m"),
    "an object repr (a return value left on the last line)": re.compile(
        r"<[\w.]+ (object )?at 0x[0-9a-f]+>|<Figure size \d+x\d+ with \d+ Axes>"),
}
# Widget models that only show a progress bar (tqdm.auto in a kernel): in a static page they are
# a frozen bar with timings from the build, the widget form of the stderr progress bars that
# _config.yml removes.
PROGRESS_MODELS = {"FloatProgressModel", "IntProgressModel"}
# Interactive widgets of the package and the static figure each page must also show, so that a
# reader without a kernel (or without the widget CDN) still sees the result.
WIDGET_FALLBACKS = {"search_box": "search_figure", "temperature_explorer": "temperature_figure"}


@dataclasses.dataclass(frozen=True)
class StandIn:
    """A local copy of an npm package that answers for a CDN address the pages load."""

    url: str        # a CDN prefix (ending in /) or one file's address
    package: str    # npm package spec, pinned
    file: str = ""  # for a one-file address: the file inside the package that answers it

    @property
    def folder(self) -> str:
        """The folder name of the unpacked package under the assets directory."""
        return re.sub(r"[^A-Za-z0-9.]+", "-", self.package.lstrip("@"))

    def local(self, assets: Path, url: str) -> Path | None:
        """The local file that answers ``url``, or None if this stand-in does not cover it."""
        address = url.split("?")[0].split("#")[0]
        if self.url.endswith("/"):
            if not address.startswith(self.url):
                return None
            path = assets / self.folder / unquote(address[len(self.url):])
        elif address == self.url:
            path = assets / self.folder / self.file
        else:
            return None
        return path if path.is_file() else None


# What Sphinx (MathJax 3) and MyST-NB (widgets: require.js and the HTML widget manager) put in
# every page's <head>. The versions are those of the addresses: "mathjax@3" is the latest 3.x.
STAND_INS = (
    StandIn("https://cdn.jsdelivr.net/npm/mathjax@3/", "mathjax@3.2.2"),
    StandIn("https://cdn.jsdelivr.net/npm/@jupyter-widgets/html-manager@1.0.6/",
            "@jupyter-widgets/html-manager@1.0.6"),
    StandIn("https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.4/require.min.js", "requirejs@2.3.4",
            "require.js"),
)


def install_assets(assets: Path) -> list[Path]:
    """Unpack every stand-in package into ``assets`` with ``npm pack`` (skipping those already there)."""
    if shutil.which("npm") is None:
        raise RuntimeError("npm (Node.js) is needed to fetch the stand-ins of the CDN scripts: apt-get install npm")
    assets.mkdir(parents=True, exist_ok=True)
    done = []
    for stand_in in STAND_INS:
        target = assets / stand_in.folder
        if not (target / "package.json").is_file():
            with tempfile.TemporaryDirectory() as tmp:
                out = subprocess.run(["npm", "pack", "--json", "--pack-destination", tmp, stand_in.package],
                                     check=True, capture_output=True, text=True, cwd=tmp).stdout
                tarball = Path(tmp) / json.loads(out)[0]["filename"]
                unpacked = Path(tmp) / "unpacked"
                with tarfile.open(tarball) as tar:
                    tar.extractall(unpacked, filter="data")
                shutil.rmtree(target, ignore_errors=True)
                shutil.move(str(unpacked / "package"), target)
        done.append(target)
    return done


def missing_assets(assets: Path) -> list[str]:
    """The stand-in packages that are not unpacked under ``assets``."""
    return [s.package for s in STAND_INS if not (assets / s.folder / "package.json").is_file()]


# ---------------------------------------------------------------------------------------------
# The book's sources and configuration

def load_config(root: Path = ROOT) -> dict[str, Any]:
    """The book's ``_config.yml``."""
    return yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))


def toc_pages(root: Path = ROOT) -> list[str]:
    """Every page of ``_toc.yml`` (root first), as document names without suffix."""
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    pages: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "file" in node:
                pages.append(str(node["file"]).removesuffix(".md").removesuffix(".ipynb"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    pages.append(str(toc["root"]))
    walk({k: v for k, v in toc.items() if k != "root"})
    return list(dict.fromkeys(pages))


@dataclasses.dataclass(frozen=True)
class Edition:
    """One edition of the book: a Sphinx project of its own, served in a folder of the built book."""

    name: str    # "en", "zh"
    source: Path  # its folder, with its _config.yml, _toc.yml and pages
    prefix: str  # its pages' folder in the served book: "" or "zh/"
    lang: str    # the language its pages declare, <html lang="...">

    def pages(self) -> list[str]:
        """Every page of its table of contents, as document names in the served book."""
        return [self.prefix + page for page in toc_pages(self.source)]

    def config(self) -> dict[str, Any]:
        """Its ``_config.yml``."""
        return load_config(self.source)

    def site_pages(self) -> list[str]:
        """Its pages and those Sphinx adds around them (search, index, module index)."""
        return self.pages() + [self.prefix + page for page in GENERATED_PAGES]

    def exists(self) -> bool:
        """Whether its sources are in the checkout (then the built book must hold its pages)."""
        return (self.source / "_config.yml").is_file() and (self.source / "_toc.yml").is_file()


# The English edition lies at the root of the built book and the Chinese one in its zh/ folder
# (tools/build_book.py); each page's language switch leads to the same page in the other one.
EDITIONS = (Edition("en", ROOT, "", "en"), Edition("zh", ROOT / "zh", "zh/", "zh-CN"))
# Pages Sphinx writes in every edition around the table of contents, with no source file.
GENERATED_PAGES = ("search", "genindex", "py-modindex")


def editions() -> list[Edition]:
    """The editions whose sources are in the checkout."""
    return [e for e in EDITIONS if e.exists()]


def edition_of(docname: str) -> tuple[Edition, str]:
    """The edition a served page belongs to, and the page's document name in that edition."""
    for edition in sorted(EDITIONS, key=lambda e: -len(e.prefix)):  # "zh/" before "", which matches all
        if docname.startswith(edition.prefix):
            return edition, docname[len(edition.prefix):]
    raise ValueError(f"{docname}: in no edition")  # unreachable while one prefix is ""


def other_edition(edition: Edition) -> Edition:
    """The edition a page's language switch leads to (the book has two)."""
    others = [e for e in EDITIONS if e != edition]
    assert len(others) == 1, "the language switch check assumes two editions"
    return others[0]


def source_of(docname: str, root: Path | None = None) -> Path:
    """The source file of a page (a notebook or a Markdown file).

    With ``root``, ``docname`` is a page of the book whose sources are in ``root``; without it,
    a page of the served book (``zh/chapters/...`` is ``zh/chapters/...`` of the Chinese edition).
    """
    if root is None:
        edition, docname = edition_of(docname)
        root = edition.source
    for suffix in (".ipynb", ".md"):
        path = root / f"{docname}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"{docname}: no {docname}.ipynb or {docname}.md in {root}")


def widget_calls(docname: str, root: Path | None = None) -> set[str]:
    """The package's interactive widgets (keys of WIDGET_FALLBACKS) that a notebook calls."""
    source = source_of(docname, root)
    if source.suffix != ".ipynb":
        return set()
    cells = json.loads(source.read_text(encoding="utf-8"))["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return {name for name in WIDGET_FALLBACKS if re.search(rf"\b{name}\(", code)}


def uses_ipywidgets(docname: str, root: Path | None = None) -> bool:
    """Whether a page's notebook calls one of the widgets or imports ipywidgets itself."""
    source = source_of(docname, root)
    text = source.read_text(encoding="utf-8")
    return bool(widget_calls(docname, root)) or (source.suffix == ".ipynb" and "ipywidgets" in text)


def repository_path(docname: str) -> str:
    """A served page's source file, as a path in the repository (``zh/chapters/ch1/02_why_clip.ipynb``).

    Read from the checkout, not from ``repository.path_to_book``: the buttons built from that
    setting must lead to the file that is really there.
    """
    return source_of(docname).relative_to(ROOT).as_posix()


def launch_url(docname: str, config: dict[str, Any]) -> str:
    """Where a served notebook page's Colab button must lead: its notebook in the repository, on the branch."""
    repo = config["repository"]
    owner_name = urlsplit(repo["url"]).path.strip("/")
    colab = config["launch_buttons"]["colab_url"].rstrip("/")
    return f"{colab}/github/{owner_name}/blob/{repo.get('branch', 'main')}/{repository_path(docname)}"


# ---------------------------------------------------------------------------------------------
# Serving the book

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1 at a free port; yields the base URL (ending in /)."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="book-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class _Anchors(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "id" or (tag == "a" and name == "name"):
                self.ids.add(value or "")


@functools.lru_cache(maxsize=None)
def anchors_of(path: Path) -> frozenset[str]:
    """Every id (and <a name>) of an HTML file."""
    parser = _Anchors()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return frozenset(parser.ids)


def resolve_link(folder: Path, base_url: str, href: str) -> str | None:
    """Why an absolute URL on the book's server points nowhere, or None if it resolves."""
    parts = urlsplit(href)
    rel = unquote(parts.path[len(urlsplit(base_url).path):])
    target = folder / rel
    if rel == "" or rel.endswith("/"):
        target = target / "index.html"
    if not target.is_file():
        return f"no file {rel or '/'}"
    if parts.fragment and target.suffix == ".html":
        fragment = unquote(parts.fragment)
        if fragment not in anchors_of(target.resolve()):
            return f"no anchor #{fragment} in {rel}"
    return None


# ---------------------------------------------------------------------------------------------
# Visiting a page

# Runs in the page once it has loaded: waits for images, MathJax and the widgets, then describes
# everything the checks look at. `where` names the section a thing is in, as a reader would.
PROBE_JS = r"""
async ({widgetWaitMs, maxGlyphs, minGlyphsPerFont}) => {
  const where = (el) => {
    const section = el.closest('section');
    if (!section) return el.closest('nav, header, footer, aside') ? 'page frame' : 'page';
    const heading = section.querySelector('h1, h2, h3, h4, h5, h6');
    const text = heading ? heading.textContent.replace(/#\s*$/, '').trim() : section.id;
    return 'section "' + text + '"';
  };
  const sleep = (ms) => new Promise(r => setTimeout(r, ms));
  for (const img of document.images) img.loading = 'eager';
  await Promise.all([...document.images].map(img => img.complete ? null :
    new Promise(r => { img.addEventListener('load', r); img.addEventListener('error', r); setTimeout(r, 10000); })));
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await Promise.race([MathJax.startup.promise, sleep(15000)]);
  }
  const views = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')];
  const rendered = (s) => {
    const output = s.closest('.cell_output') || s.parentElement;
    const box = output.querySelector('.jupyter-widgets, .widget-container, .jupyter-widget');
    return box && box.getBoundingClientRect().height > 0;
  };
  for (let t = 0; t < widgetWaitMs && views.some(s => !rendered(s)); t += 100) await sleep(100);

  const stateTag = document.querySelector('script[type="application/vnd.jupyter.widget-state+json"]');
  let state = {};
  try { state = stateTag ? (JSON.parse(stateTag.textContent).state || {}) : {}; } catch (e) { state = null; }

  const main = document.querySelector('main') || document.body;
  const images = [...document.images].map(img => ({
    src: img.getAttribute('src') || '', url: img.currentSrc || img.src, ok: img.complete && img.naturalWidth > 0,
    width: img.naturalWidth, where: where(img)}));

  const outputs = [...document.querySelectorAll('.cell_output')].map(out => ({
    where: where(out),
    classes: [...out.querySelectorAll('.output')].map(o => o.className),
    text: out.innerText,
    height: out.getBoundingClientRect().height,
    images: out.querySelectorAll('img').length,
    views: out.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length,
    input: (out.closest('.cell') && out.closest('.cell').querySelector('.cell_input'))
             ? out.closest('.cell').querySelector('.cell_input').innerText : '',
    loadedImages: [...out.querySelectorAll('img')].filter(i => i.naturalWidth > 0).length,
  }));

  const widgets = views.map(s => {
    let modelId = null;
    try { modelId = JSON.parse(s.textContent).model_id; } catch (e) {}
    const model = state && modelId ? state[modelId] : null;
    const names = [];
    const collect = (id, depth) => {
      const m = state && state[id];
      if (!m || depth > 20) return;
      names.push(m.model_name);
      for (const child of (m.state && m.state.children) || []) collect(String(child).replace('IPY_MODEL_', ''), depth + 1);
    };
    if (modelId) collect(modelId, 0);
    return {modelId, hasState: !!model, models: names, rendered: !!rendered(s), where: where(s)};
  });

  // Maths: every Sphinx math node must hold MathJax output, and none may be a TeX error.
  const mathNodes = [...main.querySelectorAll('.math')];
  const math = {
    nodes: mathNodes.length,
    typeset: mathNodes.filter(n => n.querySelector('mjx-container')).length,
    untypeset: mathNodes.filter(n => !n.querySelector('mjx-container')).slice(0, 5)
                 .map(n => ({tex: n.textContent.slice(0, 80), where: where(n)})),
    errors: [...main.querySelectorAll('mjx-merror')].map(e => ({
      message: e.getAttribute('data-mjx-error') || e.textContent.slice(0, 80), where: where(e)})),
    // MathJax draws a command it does not know as its name in red (the noundefined extension)
    undefined: [...main.querySelectorAll('mjx-container')].filter(c => c.querySelector('[style*="color: red"]'))
      .map(c => ({message: [...c.querySelectorAll('mjx-assistive-mml [mathcolor="red"]')].map(e => e.textContent)
                             .join(' ') || '(no name)', where: where(c)})),
    containers: main.querySelectorAll('mjx-container').length,
    mathjax: !!(window.MathJax && MathJax.version),
  };
  const raw = [];
  const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT, {acceptNode: (n) =>
    n.parentElement.closest('pre, code, script, style, mjx-container, .math, .cell_input, textarea')
      ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  for (let n; (n = walker.nextNode());) if (n.data.includes('$')) raw.push({text: n.data.trim().slice(0, 160), where: where(n.parentElement)});

  const links = [...document.querySelectorAll('a[href]')].map(a => ({
    // Bootstrap moves a button's title into data-bs-original-title when it sets up the tooltip.
    href: a.href, raw: a.getAttribute('href'),
    title: a.getAttribute('title') || a.getAttribute('data-bs-original-title') || a.getAttribute('aria-label') || '',
    // The theme names its buttons by class (btn-source-edit-button), and its menus too
    // (dropdown-launch-buttons): unlike the titles, the classes are the same in every language.
    classes: a.getAttribute('class') || '', menu: a.closest('.dropdown') ? a.closest('.dropdown').className : '',
    text: a.textContent.trim().slice(0, 60), where: where(a)}));

  // The edition: the page's language, its links to the other edition (_ext/editions.py). What a
  // reader sees of a switch, at the top of the page: whatever lies over its middle and corners.
  const coveredBy = (a) => {
    const r = a.getBoundingClientRect();
    if (!r.width || !r.height) return [];
    const over = new Set();
    for (const [fx, fy] of [[0.5, 0.5], [0.15, 0.2], [0.85, 0.2], [0.15, 0.8], [0.85, 0.8]]) {
      const e = document.elementFromPoint(r.x + r.width * fx, r.y + r.height * fy);
      if (!e) over.add('(outside the window)');
      else if (!a.contains(e)) over.add(e.tagName.toLowerCase() + [...e.classList].map(c => '.' + c).join(''));
    }
    return [...over];
  };
  const edition = {
    lang: document.documentElement.getAttribute('lang') || '',
    switches: [...document.querySelectorAll('a.edition-switch')].map(a => ({
      href: a.href, raw: a.getAttribute('href'), hreflang: a.getAttribute('hreflang') || '',
      text: a.textContent.trim(), visible: a.getClientRects().length > 0, coveredBy: coveredBy(a), where: where(a)})),
    alternates: [...document.querySelectorAll('link[rel~="alternate"][hreflang]')].map(l => ({
      href: l.href, hreflang: l.getAttribute('hreflang')})),
  };

  // Chinese, Japanese and Korean text: draw each character in the element's own font on a canvas
  // and compare it with what the same font draws for characters no font has (the "tofu" box).
  // Each distinct character is drawn once per font it is shown in, and drawings are compared by a
  // hash of their pixels. A Chinese page shows some hundreds of distinct characters in a handful
  // of fonts; past maxGlyphs (font, character) pairs, every font is still checked, on characters
  // taken evenly through the page (at least minGlyphsPerFont of each font's).
  const cjk = /[\u2E80-\u9FFF\uAC00-\uD7AF\uF900-\uFAFF\uFF00-\uFFEF]/gu;
  const canvas = document.createElement('canvas'); canvas.width = 64; canvas.height = 64;
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  const drawn = (ch) => {
    ctx.clearRect(0, 0, 64, 64); ctx.fillText(ch, 4, 4);
    const px = ctx.getImageData(0, 0, 64, 64).data;
    let hash = 2166136261;  // FNV-1a, byte by byte
    for (let i = 0; i < px.length; i++) hash = Math.imul(hash ^ px[i], 16777619);
    return {hash, px};
  };
  // a drawing that hashes like a box is compared pixel by pixel: no false alarm from a collision
  const isTofu = (d, boxes) => boxes.some(b => b.hash === d.hash && b.px.every((v, i) => v === d.px[i]));
  const fonts = new Map();  // CSS font -> {family, chars: Map(character -> first element showing it)}
  const article = document.querySelector('article') || main;
  let inArticle = 0;
  const textWalker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n; (n = textWalker.nextNode());) {
    const chars = n.data.match(cjk);
    if (!chars || n.parentElement.closest('script, style')) continue;
    if (article.contains(n)) inArticle += chars.length;
    const cs = getComputedStyle(n.parentElement);
    const font = `${cs.fontStyle} ${cs.fontWeight} 32px ${cs.fontFamily}`;
    if (!fonts.has(font)) fonts.set(font, {family: cs.fontFamily, chars: new Map()});
    const seen = fonts.get(font).chars;
    for (const ch of chars) if (!seen.has(ch)) seen.set(ch, n.parentElement);
  }
  const found = [...fonts.values()].reduce((sum, f) => sum + f.chars.size, 0);
  const share = found > maxGlyphs ? maxGlyphs / found : 1;
  const glyphs = {found, checked: 0, fonts: fonts.size, inArticle, tofu: []};
  for (const [font, {family, chars}] of fonts) {
    ctx.font = font; ctx.fillStyle = '#000'; ctx.textBaseline = 'top';
    const boxes = ['\u0378', '\uFFFF', '\u{10FFFD}'].map(drawn);
    const all = [...chars];
    const count = Math.min(all.length, Math.max(minGlyphsPerFont, Math.ceil(all.length * share)));
    for (let i = 0; i < count; i++) {
      const [ch, el] = all[Math.floor(i * all.length / count)];
      glyphs.checked += 1;
      if (isTofu(drawn(ch), boxes)) glyphs.tofu.push({ch, where: where(el), font: family, css: font});
    }
  }
  return {title: document.title, images, outputs, widgets, widgetState: state !== null, math, raw, links, glyphs,
          edition, height: document.documentElement.scrollHeight};
}
"""


@dataclasses.dataclass
class PageReport:
    """What a reader meets on one page."""

    docname: str
    url: str
    console_errors: list[str]
    failed_requests: list[str]
    refused_external: list[str]
    unchecked_integrity: list[str]
    probe: dict[str, Any]
    screenshot: Path | None
    seconds: float


class Reader:
    """Opens pages of a served book in a browser, answering CDN requests with the local stand-ins."""

    def __init__(self, browser: Any, base_url: str, assets: Path, screenshots: Path | None,
                 widget_wait_ms: int = 8000, max_glyphs: int = MAX_GLYPHS) -> None:
        self.browser = browser
        self.base_url = base_url
        self.assets = assets
        self.screenshots = screenshots
        self.widget_wait_ms = widget_wait_ms
        self.max_glyphs = max_glyphs
        self._hashes: dict[Path, str] = {}

    def _sri(self, path: Path) -> str:
        if path not in self._hashes:
            digest = hashlib.sha256(path.read_bytes()).digest()
            self._hashes[path] = "sha256-" + base64.b64encode(digest).decode()
        return self._hashes[path]

    def _stand_in(self, url: str) -> Path | None:
        for stand_in in STAND_INS:
            local = stand_in.local(self.assets, url)
            if local is not None:
                return local
        return None

    def _strip_foreign_integrity(self, text: str, unchecked: list[str]) -> str:
        """Drop the integrity hash of a CDN script that a local stand-in (other bytes) answers.

        The stand-in is the same release of the package but not byte for byte the CDN's build
        (cdnjs minifies require.js itself), so its hash cannot match; the browser would block it.
        """
        def fix(match: re.Match[str]) -> str:
            tag = match.group(0)
            src = re.search(r'src="([^"]+)"', tag)
            integrity = re.search(r'\sintegrity="([^"]+)"', tag)
            if not (src and integrity):
                return tag
            local = self._stand_in(src.group(1))
            if local is None or integrity.group(1) == self._sri(local):
                return tag
            unchecked.append(src.group(1))
            return tag.replace(integrity.group(0), "")

        return re.sub(r"<script\b[^>]*>", fix, text)

    @contextlib.contextmanager
    def _open(self, url: str) -> Iterator[tuple[Any, dict[str, list[str]]]]:
        """A fresh browser profile with one page at ``url``; yields the page and what it logged."""
        log: dict[str, list[str]] = {"console": [], "failed": [], "refused": [], "unchecked": []}
        context = self.browser.new_context(viewport=VIEWPORT, service_workers="block")
        page = context.new_page()

        def on_console(message: Any) -> None:
            if message.type == "error" and message.text not in KNOWN_THEME_MESSAGES:
                location = message.location or {}
                log["console"].append(f"{message.text} ({location.get('url', '')}:{location.get('lineNumber', '')})")

        def on_response(response: Any) -> None:
            if response.url.startswith(self.base_url) and response.status >= 400:
                log["failed"].append(f"{response.status} {response.url[len(self.base_url):]}")

        def on_failed(request: Any) -> None:
            # a request already answered with an error status is aborted after it: report it once
            if request.url.startswith(self.base_url) and not any(
                    f.endswith(f" {request.url[len(self.base_url):]}") for f in log["failed"]):
                log["failed"].append(f"{request.failure} {request.url[len(self.base_url):]}")

        def route_own(route: Any) -> None:
            if route.request.resource_type != "document":
                route.continue_()
                return
            response = route.fetch()
            route.fulfill(response=response, body=self._strip_foreign_integrity(response.text(), log["unchecked"]))

        def route_external(route: Any) -> None:
            request = route.request
            local = self._stand_in(request.url)
            if local is not None:
                route.fulfill(path=str(local), headers={"Access-Control-Allow-Origin": "*"})
                return
            if request.resource_type != "document":  # a link followed is no resource of the page
                log["refused"].append(f"{request.resource_type} {request.url}")
            route.abort("blockedbyclient")

        page.on("console", on_console)
        page.on("pageerror", lambda error: log["console"].append(f"uncaught {error.name}: {error.message}"))
        page.on("response", on_response)
        page.on("requestfailed", on_failed)
        # only the book's pages go through route_own (scripts, styles and images go straight on)
        page.route(lambda u: u.startswith(self.base_url) and urlsplit(u).path.endswith((".html", "/")), route_own)
        page.route(lambda u: not u.startswith(self.base_url) and not u.startswith("data:"), route_external)
        try:
            page.goto(url, wait_until="load", timeout=60_000)
            yield page, log
        finally:
            context.close()

    def visit(self, docname: str, path: str | None = None) -> PageReport:
        """Open one page, probe it and (if a screenshot folder is set) save its screenshot."""
        start = time.perf_counter()
        url = urljoin(self.base_url, path or f"{docname}.html")
        shot = None
        with self._open(url) as (page, log):
            probe = page.evaluate(PROBE_JS, {"widgetWaitMs": self.widget_wait_ms, "maxGlyphs": self.max_glyphs,
                                             "minGlyphsPerFont": GLYPHS_PER_FONT})
            if self.screenshots is not None:
                shot = self.screenshots / f"{docname.replace('/', '__')}.png"
                shot.parent.mkdir(parents=True, exist_ok=True)
                height = max(min(int(probe["height"]), SCREENSHOT_MAX_HEIGHT), VIEWPORT["height"])
                page.screenshot(path=str(shot), full_page=True, animations="disabled",
                                clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height})
        # Requests blocked before the page went away (the console logs them too) are reported once,
        # as refused requests, not again as console errors.
        console = [c for c in log["console"] if "ERR_BLOCKED_BY_CLIENT" not in c]
        return PageReport(docname, url, console, log["failed"], log["refused"], log["unchecked"], probe, shot,
                          time.perf_counter() - start)

    def search(self, term: str, timeout_ms: int = 20_000, edition: Edition = EDITIONS[0]) -> list[str]:
        """The titles an edition's search page lists for ``term`` (Sphinx's own search, in the browser)."""
        with self._open(urljoin(self.base_url, f"{edition.prefix}search.html?q={quote(term)}")) as (page, log):
            # Sphinx fills #search-results and then writes a summary ("Search finished, found ...",
            # in the page's language), whatever it found.
            page.wait_for_function("() => { const p = document.querySelector('#search-results p.search-summary');"
                                   " return p && p.textContent.trim().length > 0; }", timeout=timeout_ms)
            titles = page.eval_on_selector_all("#search-results ul.search li > a",
                                               "links => links.map(a => a.textContent.trim())")
        return titles

    def follow_switch(self, docname: str, times: int = 2, timeout_ms: int = 10_000) -> list[tuple[str, str]]:
        """Open a page and click its language switch ``times`` times, as a reader would.

        Playwright clicks only what a reader can: a switch that is hidden, or under another element,
        fails with a timeout (after ``timeout_ms``).

        Returns:
            The address (relative to the book) and the ``<html lang>`` of the page opened and of
            every page each click led to.
        """
        def here(page: Any) -> tuple[str, str]:
            url = page.url
            return (url[len(self.base_url):] if url.startswith(self.base_url) else url,
                    page.evaluate("document.documentElement.getAttribute('lang') || ''"))

        with self._open(urljoin(self.base_url, f"{docname}.html")) as (page, log):
            reached = [here(page)]
            for _ in range(times):
                with page.expect_navigation(wait_until="domcontentloaded", timeout=30_000):
                    page.click("a.edition-switch", timeout=timeout_ms)
                reached.append(here(page))
        return reached


def launch_browser(playwright: Any, env: dict[str, str] | None = None) -> Any:
    """Debian's Chromium, headless, in a fresh profile, with no network of its own."""
    if not Path(CHROMIUM).is_file():
        raise RuntimeError(f"{CHROMIUM} is missing: run `make browser-deps` (Debian's chromium and fonts-noto-cjk)")
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, env=env)


# ---------------------------------------------------------------------------------------------
# The checks: each returns the defects it found, as "what: where" lines (empty when all is well)

def console_defects(report: PageReport) -> list[str]:
    """JavaScript errors, failed requests to the book, requests to the outside with no stand-in."""
    # "Failed to load resource" repeats a failed request, which is listed once, below.
    defects = [f"console error: {e}" for e in report.console_errors if not e.startswith("Failed to load resource")]
    defects += [f"failed request: {f}" for f in dict.fromkeys(report.failed_requests)
                if not WIDGET_ICON_FONTS.match(f)]
    defects += [f"request to another site with no local stand-in (see STAND_INS): {r}"
                for r in report.refused_external]
    return defects


def image_defects(report: PageReport) -> list[str]:
    """Images that did not load."""
    return [f"image does not load: {i['src']} ({i['where']})" for i in report.probe["images"] if not i["ok"]]


def output_defects(report: PageReport) -> list[str]:
    """Cell outputs showing a traceback, stderr, noise, an empty box, or a widget without state."""
    defects = []
    for out in report.probe["outputs"]:
        for cls in out["classes"]:
            for kind in ("traceback", "stderr", "error"):
                if kind in cls.split():
                    defects.append(f"{kind} output ({out['where']})")
        for what, pattern in OUTPUT_NOISE.items():
            match = pattern.search(out["text"])
            if match:
                defects.append(f"output shows {what}: {match.group(0)[:80]!r} ({out['where']})")
        if out["height"] <= 0 and not out["text"].strip() and not out["images"] and not out["views"]:
            defects.append(f"empty output box ({out['where']})")
    if not report.probe["widgetState"]:
        defects.append("the page's widget state is not valid JSON")
    for widget in report.probe["widgets"]:
        if not widget["hasState"]:
            defects.append(f"widget {widget['modelId']} has no saved state: an empty box ({widget['where']})")
        elif not widget["rendered"]:
            defects.append(f"widget {widget['modelId']} ({widget['models'][0]}) did not render ({widget['where']})")
        if PROGRESS_MODELS & set(widget["models"]):
            defects.append(f"output shows a progress bar widget (tqdm in a kernel) ({widget['where']})")
    return defects


def maths_defects(report: PageReport) -> list[str]:
    """Maths MathJax did not typeset, TeX errors, and dollar signs left in the text."""
    math = report.probe["math"]
    defects = []
    if math["nodes"] and not math["mathjax"]:
        defects.append(f"{math['nodes']} maths nodes but MathJax did not load")
    defects += [f"maths not typeset: {m['tex']!r} ({m['where']})" for m in math["untypeset"]]
    if math["nodes"] - math["typeset"] > len(math["untypeset"]):
        defects.append(f"... {math['nodes'] - math['typeset']} maths nodes not typeset in all")
    defects += [f"TeX error: {e['message']} ({e['where']})" for e in math["errors"]]
    defects += [f"TeX command MathJax does not know, drawn in red: {e['message']!r} ({e['where']})"
                for e in math["undefined"]]
    defects += [f"raw TeX left in the text: {r['text']!r} ({r['where']})"
                for r in report.probe["raw"] if RAW_MATH.search(r["text"])]
    return defects


def link_defects(report: PageReport, folder: Path, base_url: str) -> list[str]:
    """Links to pages or anchors of the book that do not exist."""
    defects = []
    for link in report.probe["links"]:
        href = link["href"]
        if not href.startswith(base_url):
            continue
        problem = resolve_link(folder, base_url, href)
        if problem:
            defects.append(f"broken link {link['raw']!r} ({link['text']!r}, {link['where']}): {problem}")
    return sorted(set(defects))


def launch_defects(report: PageReport, config: dict[str, Any] | None = None) -> list[str]:
    """Launch, repository and edit buttons that do not lead to this page's source in the repository.

    ``config`` is the ``_config.yml`` of the page's edition (read when not given). The buttons are
    found by the classes the theme gives them, which are the same in every language, and must lead
    to the file in the checkout (``zh/chapters/...`` for the Chinese edition).
    """
    edition, _ = edition_of(report.docname)
    config = edition.config() if config is None else config
    repo_url = config["repository"]["url"].rstrip("/")
    branch = config["repository"].get("branch", "main")
    rel = repository_path(report.docname)
    notebook = rel.rsplit(".", 1)[0] + ".ipynb"
    links = report.probe["links"]
    defects = []
    launches = [link for link in links if "dropdown-launch-buttons" in link["menu"].split()]
    colab_url = config["launch_buttons"]["colab_url"].rstrip("/") + "/"
    colab = [link for link in launches if link["href"].startswith(colab_url)]
    if rel.endswith(".ipynb"):
        expected = launch_url(report.docname, config)
        if not colab:
            defects.append(f"no Colab launch button on a notebook page (launch menu: {[l['href'] for l in launches]})")
        defects += [f"Colab button leads to {link['href']}, expected {expected}"
                    for link in colab if link["href"] != expected]
    for link in launches:
        if not urlsplit(link["href"]).path.endswith(f"/{notebook}"):
            defects.append(f"{link['title']} button leads to {link['href']}, not to {notebook}")
    buttons = {"btn-source-repository-button": ("repository", repo_url),
               "btn-source-edit-button": ("edit", f"{repo_url}/edit/{branch}/{rel}")}
    for cls, (what, expected) in buttons.items():
        found = [link for link in links if cls in link["classes"].split()]
        if not found:
            defects.append(f"no {what} button (a.{cls})")
        defects += [f"{what} button leads to {link['href']}, expected {expected}"
                    for link in found if link["href"].rstrip("/") != expected]
    return defects


def glyph_defects(report: PageReport) -> list[str]:
    """CJK characters drawn as empty boxes (no font on the machine has them)."""
    tofu = report.probe["glyphs"]["tofu"]
    if not tofu:
        return []
    chars = "".join(dict.fromkeys(t["ch"] for t in tofu))
    places = sorted({t["where"] for t in tofu})
    return [f"{len(tofu)} CJK characters drawn as empty boxes ({chars[:20]}...) in {', '.join(places[:5])}; "
            f"font: {tofu[0]['font']}"]


def untranslated_defects(report: PageReport) -> list[str]:
    """A page of the Chinese edition whose article holds no Chinese character (left in English)."""
    edition, _ = edition_of(report.docname)
    if edition.lang.split("-")[0] == "zh" and not report.probe["glyphs"]["inArticle"]:
        return ["no Chinese character in the article of a page of the Chinese edition"]
    return []


def edition_switch_defects(report: PageReport, folder: Path, base_url: str) -> list[str]:
    """The page's language, and its switch to the other edition: exactly one, to the same page there."""
    edition, page = edition_of(report.docname)
    other = other_edition(edition)
    expected = urljoin(base_url, f"{other.prefix}{page}.html")
    probe = report.probe["edition"]
    defects = []
    if probe["lang"] != edition.lang:
        defects.append(f'<html lang="{probe["lang"]}">, expected "{edition.lang}" on a page of the {edition.name} '
                       "edition")
    switches = probe["switches"]
    if len(switches) != 1:
        defects.append(f"{len(switches)} language switches (a.edition-switch), expected exactly one")
    for switch in switches:
        href = switch["href"]
        label = f"language switch {switch['raw']!r} ({switch['text']!r}, {switch['where']})"
        problem = resolve_link(folder, base_url, href) if href.startswith(base_url) else "not in the book"
        if problem:
            defects.append(f"{label} leads nowhere: {problem}")
        if href != expected:
            defects.append(f"{label} leads to {href.removeprefix(base_url)}, not to the same page in the "
                           f"{other.name} edition, {expected.removeprefix(base_url)}")
        if switch["hreflang"] != other.lang:
            defects.append(f"{label} has hreflang={switch['hreflang']!r}, expected {other.lang!r}")
        if not switch["text"]:
            defects.append(f"{label} has no text")
        if not switch["visible"]:
            defects.append(f"{label} is not shown")
        elif switch["coveredBy"]:
            defects.append(f"{label} is partly hidden: {', '.join(switch['coveredBy'])} lies over it")
    alternates = [a["href"] for a in probe["alternates"] if a["hreflang"] == other.lang]
    if alternates != [expected]:
        defects.append(f'<link rel="alternate" hreflang="{other.lang}"> in the head: '
                       f"{[a.removeprefix(base_url) for a in alternates]}, expected one, to "
                       f"{expected.removeprefix(base_url)}")
    return defects


def widget_fallback_defects(report: PageReport, root: Path | None = None) -> list[str]:
    """A page whose notebook calls an interactive widget must show the widget's static figure too."""
    defects = []
    calls = widget_calls(report.docname, root)
    outputs = report.probe["outputs"]
    for widget, figure in sorted(WIDGET_FALLBACKS.items()):
        if widget not in calls:
            continue
        shown = [o for o in outputs if re.search(rf"\b{figure}\(", o["input"]) and o["loadedImages"] > 0]
        if not shown:
            defects.append(f"calls {widget} but shows no static figure from {figure} (a cell calling it "
                           f"whose output is a loaded image)")
        if not any(re.search(rf"\b{widget}\(", o["input"]) and o["views"] for o in outputs):
            defects.append(f"calls {widget} but no cell output holds its widget")
    if uses_ipywidgets(report.docname, root) and not report.probe["widgets"]:
        defects.append("the notebook uses ipywidgets but the page holds no widget")
    return defects


# A figure drawn by a cell: myst-nb names the file by the SHA-256 of its PNG.
OUTPUT_FIGURE = re.compile(r'<img [^>]*src="([^"]*_images/[0-9a-f]{64}\.png)"')


@functools.cache
def _zh_figures() -> Any:
    """The book's ``_ext/zh_figures.py``, which marks the Chinese drawings of the figures."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_book_zh_figures", ROOT / "_ext" / "zh_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def output_figures(page: Path) -> list[Path]:
    """The figures that a built page's cell outputs show, in order."""
    return [page.parent / unquote(src) for src in OUTPUT_FIGURE.findall(page.read_text(encoding="utf-8"))]


def figure_defects(folder: Path, docname: str) -> list[str]:
    """An English page shows no Chinese drawing; a Chinese page shows, in the place of each figure of
    its English page, that figure's Chinese drawing (``_ext/zh_figures.py``)."""
    figures = _zh_figures()
    edition, name = edition_of(docname)
    shown = output_figures(folder / f"{docname}.html")
    marks = [figures.text_chunks(path) for path in shown]
    if edition.name != "zh":
        return [f"figure {i} ({path.name}) is a Chinese drawing" for i, (path, chunks) in enumerate(zip(shown, marks), 1)
                if chunks.get(figures.EDITION_KEY)]
    english = [hashlib.sha256(path.read_bytes()).hexdigest() for path in output_figures(folder / f"{name}.html")]
    defects = [] if len(english) == len(shown) else [f"{len(shown)} figures, its English page {len(english)}"]
    for i, (path, chunks) in enumerate(zip(shown, marks), 1):
        if chunks.get(figures.EDITION_KEY) != "zh":
            defects.append(f"figure {i} ({path.name}) is not drawn in Chinese")
        elif i <= len(english) and chunks.get(figures.REPLACES_KEY) != english[i - 1]:
            defects.append(f"figure {i} ({path.name}) is not the Chinese drawing of the English page's figure {i}")
    return defects


def main(argv: list[str]) -> int:
    """``install-assets DIR``: unpack the stand-in packages (used by ``make browser-deps``)."""
    if len(argv) != 2 or argv[0] != "install-assets":
        print("usage: python browser_tests/book_browser.py install-assets DIR", file=sys.stderr)
        return 2
    for path in install_assets(Path(argv[1])):
        print(f"stand-in ready: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
