"""Pages from a MediaWiki API (Wikipedia by default): category members, and page wikitext at a revision.

Page text comes from ``prop=revisions`` (wikitext of the main slot), cleaned to plain text by the same
mwparserfromhell code as Wikipedia dumps, with the trailing reference sections dropped. (The
TextExtracts API returns one whole-page extract per request only; revisions serve 50 pages at once,
and can be pinned to a date with ``as_of`` — the revision current at that time — so a corpus can be
rebuilt exactly.) Every page records its id, revision id and revision timestamp.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

from lm_eval_kinject.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["MEDIAWIKI_API", "MediaWiki", "Page", "month_categories"]

MEDIAWIKI_API = "https://en.wikipedia.org/w/api.php"
_TAIL_SECTIONS = re.compile(r"^==\s*(?:References|Notes|See also|External links|Further reading|Citations|Sources|"
                            r"Bibliography|Footnotes)\s*==\s*$", re.M | re.I)
_MONTH_NAMES = ("January February March April May June July August September October November December").split()


@dataclass(frozen=True)
class Page:
    pageid: int
    title: str
    revid: int
    timestamp: str
    text: str  # plain text
    url: str


def month_categories(start: str, end: str, template: str = "{month} {year} events in the United States") -> list[str]:
    """Category names for every month from ``start`` to ``end`` (``YYYY-MM``), e.g. the paper's Aug-Nov 2023."""
    def parse(value: str, flag: str) -> tuple[int, int]:
        match = re.fullmatch(r"(\d{4})-(\d{1,2})", value.strip())
        if not match or not 1 <= int(match.group(2)) <= 12:
            raise DataError(f"{flag} {value!r}: expected a month as YYYY-MM, e.g. 2023-08")
        return int(match.group(1)), int(match.group(2))

    year, month = parse(start, "--from")
    last = parse(end, "--to")
    if (year, month) > last:
        raise DataError(f"--from {start} is after --to {end}")
    names = []
    while (year, month) <= last:
        names.append(template.format(month=_MONTH_NAMES[month - 1], year=year))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return names


class MediaWiki:
    """A MediaWiki API endpoint. Online only: an unreachable endpoint fails fast with a clear error."""

    def __init__(self, api: str = MEDIAWIKI_API, timeout_s: float = 10.0) -> None:
        import requests

        self.api, self.timeout_s = api, timeout_s
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "lm-eval-kinject (knowledge-injection research)"

    def call(self, params: dict) -> dict:
        import requests

        try:
            response = self.session.get(self.api, params={**params, "format": "json", "formatversion": 2},
                                        timeout=self.timeout_s)
            response.raise_for_status()
            data = response.json()
        except requests.RequestException as exc:
            raise DataError(f"cannot reach the MediaWiki API at {self.api} ({type(exc).__name__}); this source "
                            "needs network access — use a Wikipedia dump or a JSONL corpus offline") from None
        except ValueError:
            raise DataError(f"{self.api} did not answer with JSON: is it a MediaWiki api.php URL?") from None
        if "error" in data:
            error = data["error"]
            raise DataError(f"{self.api}: {error.get('code', 'error')}: {error.get('info', error)}")
        return data

    def category_members(self, category: str) -> list[str]:
        """Titles of the articles (namespace 0) in ``category`` (with or without the ``Category:`` prefix)."""
        title = category if category.lower().startswith("category:") else f"Category:{category}"
        params = {"action": "query", "list": "categorymembers", "cmtitle": title, "cmlimit": 500, "cmnamespace": 0,
                  "cmtype": "page"}
        titles: list[str] = []
        while True:
            data = self.call(params)
            titles += [m["title"] for m in data.get("query", {}).get("categorymembers", [])]
            if "continue" not in data:
                break
            params.update(data["continue"])
        if not titles:
            logger.warning("MediaWiki: category %r has no articles", category)
        return titles

    def pages(self, titles: list[str], as_of: str | None = None) -> Iterator[Page]:
        """The pages named ``titles`` (redirects followed), at their latest revision or the one current at ``as_of``."""
        from lm_eval_kinject.corpus import wikitext_to_text

        base = {"action": "query", "prop": "revisions", "rvprop": "ids|timestamp|content", "rvslots": "main",
                "redirects": 1}
        step = 1 if as_of else 50  # a dated revision is a per-page query
        for start in range(0, len(titles), step):
            batch = titles[start:start + step]
            params = {**base, "titles": "|".join(batch)}
            if as_of:
                params.update(rvlimit=1, rvdir="older", rvstart=as_of)
            for page in self.call(params).get("query", {}).get("pages", []):
                if page.get("missing") or page.get("invalid"):
                    logger.warning("MediaWiki: no page titled %r", page.get("title"))
                    continue
                revisions = page.get("revisions") or []
                if not revisions:
                    logger.warning("MediaWiki: %r has no revision%s", page["title"], f" before {as_of}" if as_of else "")
                    continue
                revision = revisions[0]
                wikitext = revision.get("slots", {}).get("main", {}).get("content", revision.get("content", ""))
                cut = _TAIL_SECTIONS.search(wikitext)
                text = wikitext_to_text(wikitext[:cut.start()] if cut else wikitext)
                yield Page(page["pageid"], page["title"], revision["revid"], revision.get("timestamp", ""), text,
                           f"{self.api}?curid={page['pageid']}&oldid={revision['revid']}")
