"""What the three web consoles share: the node console of officers, liaisons and
security leads (``scifed node console``), the researcher's console on their own machine
(``scifed ui``) and the operator's console at the coordinator.

Each console is a small FastAPI app that calls the same APIs as the CLI (the node's admin
socket, the coordinator's researcher and operator RPCs) and renders server-side Jinja2
pages, with htmx for live parts; every asset ships in this package (no CDN at run time).
This package holds only what is common: the app factory with its security headers and
CSRF check (:mod:`scifed.web.app`), sessions (:mod:`scifed.web.sessions`), interface text
in English and Chinese (:mod:`scifed.web.i18n`), serving on loopback or over TLS
(:mod:`scifed.web.serve`), and the base template and stylesheet.
"""
