"""Automatic checks on generated text: facts that must survive a paraphrase, and well-formed questions.

No NER model is needed (or shipped): the facts of a passage are its numbers (digits or number words),
month names, and named entities approximated by runs of capitalised words that are not sentence
openers. The approximation errs towards demanding more (a capitalised common word at the start of a
clause counts as an entity), which rejects some good paraphrases rather than accepting lossy ones;
the rejection reason names what was lost, so thresholds can be judged from the record.
"""
from __future__ import annotations

import json
import re

__all__ = ["facts_of", "missing_facts", "word_overlap", "containment", "repeated_span", "extract_json",
           "clean_paraphrase", "check_question", "normalize_option", "REFERENCE_RE"]

_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80",
                      "ninety": "90", "hundred": "100", "thousand": "1000", "million": "million",
                      "billion": "billion"})
_MONTHS = ("january february march april may june july august september october november december").split()
_MONTH_ABBR = {m[:3]: m for m in _MONTHS} | {"sept": "september"}
# words that open clauses with a capital without naming anything
_OPENERS = set("""a an the this that these those it its in on at by for from to of as after before during
while when where which who whom whose what why how however although though but and or nor so yet if
then there here he she they we i you his her their our my your some many most several all each both
one two three another other such no not also only according despite following since until with within
without among between under over into about around through against toward towards upon once because
unlike like later early earlier""".split())
_WORD_RE = re.compile(r"[A-Za-z][A-Za-z'’.-]*[A-Za-z]|[A-Za-z]")
_NUM_RE = re.compile(r"\d[\d,]*(?:\.\d+)?")
REFERENCE_RE = re.compile(
    r"\b(?:(?:the|this|that|above|given|provided|following)\s+(?:passage|article|text|excerpt|paragraph|document|"
    r"chunk|context|reading)|according to the (?:passage|article|text|excerpt|paragraph|document|context|author))\b",
    re.I)


def _numbers(text: str) -> set[str]:
    found = {m.group().replace(",", "").rstrip(".") for m in _NUM_RE.finditer(text)}
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in _NUMBER_WORDS and word != "one":  # "one of the ..." is rarely a quantity
            found.add(_NUMBER_WORDS[word])
    return {n[:-2] if n.endswith(".0") else n for n in found}


def _months(text: str) -> set[str]:
    words = re.findall(r"[a-z]+", text.lower())
    return {w for w in words if w in _MONTHS and w != "may"} | {_MONTH_ABBR[w] for w in words if w in _MONTH_ABBR
                                                                 and w != "may" and len(w) > 2 and w not in _MONTHS}


def _bare(word: str) -> str:
    return re.sub(r"['’]s$", "", word.rstrip("."))


def _entities(text: str) -> set[str]:
    """Runs of capitalised words, minus clause openers and month names.

    A sentence's first word counts only if the text also capitalises it mid-sentence ("Due to ..."
    is not a name; "Maui is ..." is, when Maui occurs elsewhere).
    """
    sentences = [_WORD_RE.findall(s) for s in re.split(r"(?<=[.!?;:])\s+|\n+", text)]
    inner_capitals = {_bare(w) for words in sentences for w in words[1:] if w[:1].isupper()}
    entities = set()
    for words in sentences:
        run: list[str] = []
        for position, word in enumerate(words + [""]):
            bare = _bare(word)
            capital = word[:1].isupper() and word.lower() not in _MONTHS and word.lower() != "i"
            if capital and position == 0 and (word.lower() in _OPENERS or bare not in inner_capitals):
                capital = False
            if capital and bare.lower() in _NUMBER_WORDS or "-" in word and word.split("-")[0].lower() in _NUMBER_WORDS:
                capital = False  # "Forty-one" is a number, checked as such
            if capital:
                run.append(bare)
                continue
            while run and run[0].lower() in _OPENERS:
                run.pop(0)
            if run:
                entities.add(" ".join(run))
            run = []
    return entities


def facts_of(text: str) -> dict[str, set[str]]:
    """The numbers, months and named entities of ``text``."""
    return {"numbers": _numbers(text), "months": _months(text), "entities": _entities(text)}


def missing_facts(source: str, candidate: str) -> list[str]:
    """Facts of ``source`` absent from ``candidate``.

    A one-word entity must occur; a longer one is kept when at least half of its words occur (a run of
    capitals often joins a title and a name, "Jordanian King Abdullah II", reworded as "King Abdullah II
    of Jordan").
    """
    facts, have = facts_of(source), facts_of(candidate)
    words = {_bare(w).lower() for w in _WORD_RE.findall(candidate)}
    lost = sorted(facts["numbers"] - have["numbers"]) + sorted(facts["months"] - have["months"])
    for entity in sorted(facts["entities"]):
        parts = entity.lower().split()
        if sum(p in words for p in parts) * 2 < len(parts) or (len(parts) == 1 and parts[0] not in words):
            lost.append(entity)
    return lost


def _shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = [w.lower() for w in _WORD_RE.findall(text)]
    return {tuple(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def containment(part: str, whole: str, n: int = 3) -> float:
    """Share of ``part``'s word ``n``-grams that occur in ``whole`` (1.0: ``part`` is cut from ``whole``)."""
    sp = _shingles(part, n)
    return len(sp & _shingles(whole, n)) / len(sp) if sp else 1.0


def repeated_span(text: str, source: str = "", words: int = 10) -> str | None:
    """A run of ``words`` words (numbers included) found twice in ``text`` but not in ``source``, or None.

    Small models loop and restate; a run the source itself repeats ("winds of 150 mph ...") is fine.
    """
    def repeats(value: str) -> list[tuple[str, ...]]:
        tokens = re.findall(r"\w+", value.lower())
        seen, twice = set(), []
        for i in range(len(tokens) - words + 1):
            span = tuple(tokens[i:i + words])
            if span in seen:
                twice.append(span)
            seen.add(span)
        return twice

    allowed = set(repeats(source)) if source else set()
    return next((" ".join(span) for span in repeats(text) if span not in allowed), None)


def word_overlap(a: str, b: str, n: int = 3) -> float:
    """Jaccard similarity of the word ``n``-grams of ``a`` and ``b`` (1.0: same wording)."""
    sa, sb = _shingles(a, n), _shingles(b, n)
    return len(sa & sb) / len(sa | sb) if sa or sb else 1.0


_PREAMBLE_RE = re.compile(r"^\s*(?:sure[,!.]?\s*)?(?:here(?:'s| is)\s+(?:a|the|my)?\s*(?:paraphrased?|rewritten|"
                          r"reworded)?\s*(?:version|text|paraphrase)?[^:\n]*:|(?:paraphrased?|rewritten)\s*(?:text|"
                          r"version)?\s*:)\s*", re.I)


def clean_paraphrase(text: str) -> str:
    """Drop a chatty preamble ("Here is the paraphrase:"), surrounding quotes and code fences."""
    text = text.strip().strip("`").strip()
    text = _PREAMBLE_RE.sub("", text, count=1).strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'“”":
        text = text[1:-1].strip()
    return text


def extract_json(text: str):
    """The first JSON array or object in ``text`` (code fences and chatter around it are ignored).

    Raises:
        ValueError: no JSON value found.
    """
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        return value
    raise ValueError("no JSON array or object in the answer")


def normalize_option(option: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", option.casefold()).split())


def _content_words(text: str) -> set[str]:
    return {w for w in normalize_option(text).split() if w not in _OPENERS and len(w) > 1}


def check_question(item, chunk_text: str, title: str = "") -> tuple[dict | None, list[str]]:
    """Validate one generated question ``{"question", "options"|"choices", "answer"}``.

    Returns ``(question, [])`` with ``{"question", "choices", "answer"}`` normalised (answer an index)
    when every check passes, else ``(None, reasons)``.
    """
    if not isinstance(item, dict):
        return None, [f"not a JSON object: {str(item)[:60]!r}"]
    question = item.get("question")
    options = item.get("options", item.get("choices"))
    answer = item.get("answer", item.get("correct"))
    reasons = []
    if not isinstance(question, str) or not question.strip():
        reasons.append("no question text")
        question = ""
    if not isinstance(options, list) or len(options) != 4 or not all(isinstance(o, (str, int, float)) for o in options):
        count = len(options) if isinstance(options, list) else 0
        return None, reasons + [f"needs exactly 4 options, got {count}"]
    options = [str(o).strip() for o in options]
    options = [re.sub(r"^\(?[A-Da-d][).:]\s+", "", o) for o in options]  # "A) Paris" -> "Paris"
    if any(not o for o in options):
        reasons.append("an empty option")
    if len({normalize_option(o) for o in options}) != 4:
        reasons.append("options are not 4 distinct answers")
    index = _answer_index(answer, options)
    if index is None:
        reasons.append(f"answer {answer!r} is not an index 0-3, a letter A-D or one of the options")
    if question and REFERENCE_RE.search(question):
        reasons.append("refers to the passage/article/text")
    if question and len(question.split()) < 5:
        reasons.append("question shorter than 5 words")
    if question and not _names_subject(question, chunk_text, title):
        reasons.append("does not name its subject (no name, date or number of the chunk)")
    if index is not None and not reasons:
        correct = options[index]
        words = _content_words(correct)
        chunk_words = _content_words(chunk_text) | _numbers(chunk_text)
        if words and len(words & chunk_words) < 0.5 * len(words):
            reasons.append(f"correct option {correct!r} is not supported by the chunk")
        if normalize_option(correct) and f" {normalize_option(correct)} " in f" {normalize_option(question)} ":
            reasons.append("the question gives its answer away")
    if reasons:
        return None, reasons
    return {"question": question.strip(), "choices": options, "answer": index}, []


def _answer_index(answer, options: list[str]) -> int | None:
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int):
        return answer if 0 <= answer < 4 else None
    if isinstance(answer, str):
        value = answer.strip()
        if value.isdigit():
            return int(value) if int(value) < 4 else None
        if len(value) == 1 and value.upper() in "ABCD":
            return "ABCD".index(value.upper())
        wanted = normalize_option(value)
        matches = [i for i, o in enumerate(options) if normalize_option(o) == wanted]
        return matches[0] if len(matches) == 1 else None
    return None


def _names_subject(question: str, chunk_text: str, title: str) -> bool:
    facts = facts_of(chunk_text + "\n" + title)
    q_words = {w.lower() for w in _WORD_RE.findall(question)}
    if facts["numbers"] & _numbers(question) or facts["months"] & _months(question):
        return True
    return any(all(w.lower() in q_words for w in entity.split()) or
               any(len(w) > 3 and w.lower() in q_words and w.lower() not in _OPENERS for w in entity.split())
               for entity in facts["entities"])
