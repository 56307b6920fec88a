"""Interface text in English and Chinese, one catalog for every console.

A page names a message by key (``t("nav.datasets")``); the language comes from the
``lang`` cookie the language switch sets, else from the browser's Accept-Language.
A key that is missing from a language is a bug, not a fallback: :func:`check_catalog`
(run by the tests) fails on it, and :func:`Translator.__call__` raises, so an untranslated
page never ships quietly. Consoles add their own messages with :func:`register`, each in
its own module, so this file holds only the shared ones.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

LANGUAGES = ("en", "zh")
DEFAULT = "en"
COOKIE = "lang"

_CATALOG: dict[str, dict[str, str]] = {lang: {} for lang in LANGUAGES}


def register(messages: Mapping[str, tuple[str, str]]) -> None:
    """Add messages: key -> (English, Chinese). A key registered twice must agree."""
    for key, (en, zh) in messages.items():
        for lang, text in (("en", en), ("zh", zh)):
            old = _CATALOG[lang].get(key)
            if old is not None and old != text:
                raise ValueError(f"message {key!r} registered twice with different {lang} text")
            _CATALOG[lang][key] = text


register({
    "lang.name": ("English", "中文"),
    "lang.switch": ("中文", "English"),
    "app.name": ("scifed", "scifed 科学数据联邦"),
    "nav.logout": ("Log out", "退出登录"),
    "login.title": ("Log in", "登录"),
    "login.submit": ("Log in", "登录"),
    "login.failed": ("Login failed", "登录失败"),
    "login.token_hint": ("Open the address the console printed when it started.",
                         "请打开控制台启动时打印的地址。"),
    "error.title": ("Error", "错误"),
    "error.csrf": ("The form has expired; reload the page and try again.",
                   "表单已过期，请刷新页面后重试。"),
    "error.not_found": ("Not found", "未找到"),
    "common.none": ("None yet.", "暂无。"),
    "common.back": ("Back", "返回"),
    "common.refresh": ("Refresh", "刷新"),
    "common.download": ("Download", "下载"),
    "common.submit": ("Submit", "提交"),
    "common.reason": ("Reason", "理由"),
    "common.state": ("State", "状态"),
    "common.signed_in_as": ("Signed in as", "当前用户"),
    "common.sha256": ("sha256", "SHA-256 哈希"),
})


def pick_language(cookie: str | None, accept_language: str | None) -> str:
    if cookie in LANGUAGES:
        return cookie
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh"
        if tag.startswith("en"):
            return "en"
    return DEFAULT


class Translator:
    """``t(key, **fields)`` in one language; fields fill ``{name}`` placeholders."""

    def __init__(self, lang: str):
        if lang not in LANGUAGES:
            raise ValueError(f"no interface language {lang!r}: choose {', '.join(LANGUAGES)}")
        self.lang = lang

    def __call__(self, key: str, **fields) -> str:
        try:
            text = _CATALOG[self.lang][key]
        except KeyError:
            raise KeyError(f"interface text {key!r} has no {self.lang} translation") from None
        return text.format(**fields) if fields else text

    def term(self, value: object, kind: str = "term") -> str:
        """A word the node sends as data — a state (``pending``, ``withheld``), a delivery
        method, a policy value — in this language: the catalog's ``term.<word>``. A value
        without one (a name, a number, a word the catalog does not know yet) is shown as
        it is, since it is data, not interface text; the tests check that every state and
        method the node defines has its term. ``kind`` names another group of such words
        (``chk``: the names in a result's disclosure checks; ``researcher``: a word as the
        researcher reads it, where that differs), which falls back to the shared term.
        The words are in :mod:`scifed.web.terms`."""
        text = str(value)
        catalog = _CATALOG[self.lang]
        return catalog.get(f"{kind}.{text}") or catalog.get(f"term.{text}", text)

    def said(self, text: object, shape: object = None) -> str:
        """A sentence the node built (:mod:`scifed.sentences`) in this language: ``text``
        is its English as stored or sent, ``shape`` its key and fields beside it (or
        ``text`` is the sentence itself). A text without them — a person's words, a
        record older than its key — is shown as it was written."""
        key, fields = _shape(text if shape is None else shape)
        template = _CATALOG[self.lang].get(f"said.{key}") if key else None
        if template is None:
            return "" if text is None else str(text)
        values = {name: self.said(None, v) if _shape(v)[0] else v
                  for name, v in fields.items()}
        try:
            return _Filler(self).format(template, **values)
        except (KeyError, IndexError, ValueError):  # fields of another version's sentence
            return "" if text is None else str(text)


def _shape(value: object) -> tuple[str | None, Mapping[str, Any]]:
    """The key and fields of a sentence: a ``scifed.sentences.Said`` or its JSON form."""
    if isinstance(value, Mapping):
        key, fields = value.get("key"), value.get("fields")
    else:
        key, fields = getattr(value, "key", None), getattr(value, "fields", None)
    if isinstance(key, str) and isinstance(fields, Mapping):
        return key, fields
    return None, {}


class _Filler(string.Formatter):
    """Fills a sentence's template; a field marked ``!t`` is a word shown as its term."""

    def __init__(self, t: Translator) -> None:
        self.t = t

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        return self.t.term(value) if conversion == "t" else super().convert_field(
            value, conversion)


def check_catalog() -> list[str]:
    """Keys present in one language and missing in another (empty when complete)."""
    keys = set().union(*(_CATALOG[lang] for lang in LANGUAGES))
    return sorted(f"{lang}:{k}" for lang in LANGUAGES for k in keys if k not in _CATALOG[lang])


def catalog_keys() -> set[str]:
    return set(_CATALOG[DEFAULT])


# the words every console shows as terms, registered once whichever console starts
from scifed.web import terms  # noqa: E402, F401
