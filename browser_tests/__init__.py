"""The browser check of the built book (``make book-check``): every page read in headless Chromium.

Kept out of ``tests/`` on purpose: these tests need a built book (``make book``), Debian's
Chromium and the local copies of the CDN scripts (``make browser-deps``), so ``make unit``
(``pytest tests``) never collects them; and as a package, its ``conftest`` cannot shadow the
``conftest`` module that the unit tests import helpers from.
"""
