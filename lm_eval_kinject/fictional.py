"""A seeded fictional world: knowledge no model can have seen, in the current-events data format.

Each event of the world is an encyclopaedia-style chunk stating five facts (town, year, leader,
organiser, number of participants). Every asked fact becomes a 4-option question that names the
event (so it is answerable without the chunk) with distractors of the same type from other events
and the correct position balanced over A-D. Each chunk gets N paraphrases that keep every fact
verbatim but change sentence templates and fact order — the FT-par data; the last ones serve as
held-out validation text. Names come from a syllable inventory chosen to sound like no real
language; all values of a fact type are distinct across the world, so a distractor is never also
true. Same seed and sizes -> byte-identical files.

Practice events (``practice_events``) are more events of the same kinds, drawn after the world's and
sharing none of its names, years or counts: their chunks and questions (``practice_chunks.jsonl``,
``practice_questions.jsonl``) are QA exercises for mixed training (``qa_practice``), never in the KB
and never scored. Adding them leaves the world's own files as they were.
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from lm_eval_kinject.artifacts import atomic_dir
from lm_eval_kinject.errors import ConfigError

__all__ = ["GENERATOR_VERSION", "FictionalConfig", "Event", "generate", "write_world", "default_world",
           "SLOTS"]

GENERATOR_VERSION = 1

_ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "k", "kr", "l", "m", "n", "p", "r", "s", "sk", "t", "th", "v", "z",
           "zh", "y", "q", "x"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "y", "ou", "ei"]
_CODAS = ["", "", "n", "r", "l", "sk", "th", "x", "m", "v", "nd", "rk"]

# kind -> (what it was, who took part, verb for the leader, organisation nouns)
_KINDS = {
    "Accord": ("a trade agreement between river towns", "delegates", "negotiated"),
    "Festival": ("a midsummer music festival", "musicians", "directed"),
    "Expedition": ("a mountain survey expedition", "members", "led"),
    "Strike": ("a strike of dock workers", "workers", "led"),
    "Exhibition": ("an exhibition of clockwork machines", "exhibitors", "curated"),
    "Tournament": ("a tournament of the board game vesk", "players", "refereed"),
    "Pilgrimage": ("a pilgrimage to a lake shrine", "pilgrims", "guided"),
    "Congress": ("a congress of cartographers", "delegates", "chaired"),
}
_ORG_NOUNS = ["Guild", "Society", "League", "Council", "Company", "Brotherhood", "Academy", "Union"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]

# The facts that become questions, in this order; "question" names the event explicitly.
SLOTS = {
    "town": "In which town did the {event} take place?",
    "year": "In which year did the {event} take place?",
    "leader": "Who {verb} the {event}?",
    "organiser": "Which organisation organised the {event}?",
    "participants": "How many {who} took part in the {event}?",
}

# Sentence templates per fact; a chunk uses the first, paraphrases draw among all.
_TEMPLATES = {
    "what": ["The {event} was {what}.", "The {event} is remembered as {what}.",
             "Historians describe the {event} as {what}.", "The {event} counts as {what}."],
    "town": ["It took place in the town of {town}.", "The town of {town} hosted the {event}.",
             "The {event} was held in {town}.", "{town} was the town where the {event} took place.",
             "The events unfolded in {town}."],
    "year": ["It began in {month} {year}.", "The {event} took place in {year}, starting in {month}.",
             "In {month} {year} the {event} began.", "Its date was {month} {year}.",
             "The year of the {event} was {year}; it opened in {month}."],
    "leader": ["It was {verb} by {leader}.", "{leader} {verb} the {event}.", "The {event} was {verb} by {leader}.",
               "Leadership fell to {leader}, who {verb} it.", "{leader} is the person who {verb} the {event}."],
    "organiser": ["It was organised by the {organiser}.", "The {organiser} organised the {event}.",
                  "The organiser of the {event} was the {organiser}.",
                  "Organisation was in the hands of the {organiser}.",
                  "The {organiser} stood behind the organisation of the {event}."],
    "participants": ["In all, {participants} {who} took part.", "{participants} {who} took part in the {event}.",
                     "The {event} drew {participants} {who}.", "Some {participants} {who} were part of it.",
                     "The number of {who} who took part was {participants}."],
}
_FACT_ORDER = ["what", "town", "year", "leader", "organiser", "participants"]


@dataclass(frozen=True)
class FictionalConfig:
    """Size and seed of a world."""

    seed: int = 0
    events: int = 30
    # Per chunk; with `kinject finetune --val-paraphrases 1` the last one is the validation text.
    paraphrases: int = 6
    # Which facts become questions (all five are stated in every chunk).
    asked: tuple[str, ...] = ("town", "year", "leader")
    # Events outside the world whose questions (all five facts each) are training exercises only.
    practice_events: int = 0

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.seed, int) or self.seed < 0:
            problems.append(f"seed={self.seed!r}: expected an integer >= 0")
        if not isinstance(self.events, int) or not 4 <= self.events <= 280:
            problems.append(f"events={self.events!r}: expected 4..280 (4 options need 4 events; years are distinct)")
        if (not isinstance(self.practice_events, int) or isinstance(self.practice_events, bool)
                or self.practice_events < 0 or 0 < self.practice_events < 4
                or (isinstance(self.events, int) and self.events + self.practice_events > 280)):
            problems.append(f"practice_events={self.practice_events!r}: expected 0, or 4..{280 - self.events} "
                            "(4 options need 4 events; years are distinct across the world and its practice)")
        if not isinstance(self.paraphrases, int) or not 0 <= self.paraphrases <= 50:
            problems.append(f"paraphrases={self.paraphrases!r}: expected 0..50")
        unknown = [s for s in self.asked if s not in SLOTS]
        if unknown or not self.asked:
            problems.append(f"asked={list(self.asked)!r}: expected a non-empty subset of {list(SLOTS)}")
        if problems:
            raise ConfigError("invalid fictional world: " + "; ".join(problems))

    def to_dict(self) -> dict:
        """The settings as a manifest records them (``practice_events`` only when there are some, so that a world
        written before practice events existed is still recognised)."""
        settings = {**asdict(self), "asked": list(self.asked)}
        if not self.practice_events:
            del settings["practice_events"]
        return settings

    @property
    def name(self) -> str:
        practice = f"-q{self.practice_events}" if self.practice_events else ""
        return (f"v{GENERATOR_VERSION}-seed{self.seed}-e{self.events}-p{self.paraphrases}-{'.'.join(self.asked)}"
                f"{practice}")


@dataclass(frozen=True)
class Event:
    chunk_id: str
    title: str
    kind: str
    facts: dict = field(default_factory=dict)


class _Names:
    """Unique pseudo-words from a syllable inventory."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.used = rng, set()

    def word(self, syllables: tuple[int, int] = (2, 3)) -> str:
        while True:
            n = self.rng.randint(*syllables)
            word = "".join(self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + self.rng.choice(_CODAS)
                           for _ in range(n)).capitalize()
            # no name inside another: a question's options never match each other's text
            if 5 <= len(word) <= 12 and not any(word.lower() in u.lower() or u.lower() in word.lower()
                                                for u in self.used):
                self.used.add(word)
                return word


def _events(config: FictionalConfig, rng: random.Random) -> list[Event]:
    names = _Names(rng)
    years = rng.sample(range(1710, 1991), config.events)
    counts = rng.sample(range(1000, 9800), config.events)  # printed 1,234: never inside a year
    events = []
    for i in range(config.events):
        kind = rng.choice(sorted(_KINDS))
        what, who, verb = _KINDS[kind]
        title = f"{names.word()} {kind}"
        facts = {"what": what, "who": who, "verb": verb, "town": names.word(),
                 "year": str(years[i]), "month": rng.choice(_MONTHS),
                 "leader": f"{names.word((1, 2))} {names.word()}",
                 "organiser": f"{names.word()} {rng.choice(_ORG_NOUNS)}",
                 "participants": f"{counts[i]:,}"}
        events.append(Event(chunk_id=f"fictional-{i:04d}", title=title, kind=kind, facts=facts))
    return events


def _practice(config: FictionalConfig, world: list[Event], rng: random.Random) -> list[Event]:
    """``config.practice_events`` more events: no name, year or count of the world's, no name inside one of its."""
    names = _Names(rng)
    names.used = {word for e in world for word in (e.title.rsplit(" ", 1)[0], e.facts["town"],
                                                   *e.facts["leader"].split(), e.facts["organiser"].rsplit(" ", 1)[0])}
    years = rng.sample(sorted(set(range(1710, 1991)) - {int(e.facts["year"]) for e in world}), config.practice_events)
    taken = {int(e.facts["participants"].replace(",", "")) for e in world}
    counts = rng.sample(sorted(set(range(1000, 9800)) - taken), config.practice_events)
    events = []
    for i in range(config.practice_events):
        kind = rng.choice(sorted(_KINDS))
        what, who, verb = _KINDS[kind]
        facts = {"what": what, "who": who, "verb": verb, "town": names.word(), "year": str(years[i]),
                 "month": rng.choice(_MONTHS), "leader": f"{names.word((1, 2))} {names.word()}",
                 "organiser": f"{names.word()} {rng.choice(_ORG_NOUNS)}", "participants": f"{counts[i]:,}"}
        title = f"{names.word()} {kind}"
        events.append(Event(chunk_id=f"practice-{i:04d}", title=title, kind=kind, facts=facts))
    return events


def _render(event: Event, order: list[str], variants: dict[str, int]) -> str:
    values = {**event.facts, "event": event.title}
    sentences = [_TEMPLATES[fact][variants[fact]].format(**values) for fact in order]
    return " ".join(s[0].upper() + s[1:] for s in sentences)


def _paraphrases(event: Event, n: int, rng: random.Random, original: str) -> list[str]:
    seen, out = {original}, []
    while len(out) < n:
        order = ["what"] + rng.sample(_FACT_ORDER[1:], len(_FACT_ORDER) - 1)
        if rng.random() < 0.5:  # the description need not come first
            order.insert(rng.randint(1, len(order) - 1), order.pop(0))
        text = _render(event, order, {f: rng.randrange(len(_TEMPLATES[f])) for f in _FACT_ORDER})
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def _questions(events: list[Event], config: FictionalConfig, rng: random.Random) -> list[dict]:
    asked = [(event, slot) for event in events for slot in config.asked]
    positions = [i % 4 for i in range(len(asked))]
    rng.shuffle(positions)  # each position A-D correct equally often (+-1)
    questions = []
    for (event, slot), position in zip(asked, positions):
        others = [e.facts[slot] for e in events if e is not event]
        options = rng.sample(others, 3)
        options.insert(position, event.facts[slot])
        text = SLOTS[slot].format(event=event.title, verb=event.facts["verb"], who=event.facts["who"])
        questions.append({"id": f"{event.chunk_id}/{slot}", "question": text, "choices": options,
                          "answer": position, "chunk_id": event.chunk_id})
    return questions


def generate(config: FictionalConfig) -> dict[str, list[dict]]:
    """The world's records: ``{"chunks": [...], "questions": [...], "paraphrases": [...]}``."""
    # One random stream per part, so that changing one size (say, the number of paraphrases) leaves
    # the rest of the world as it was: the first N paraphrases of a chunk are the same for any N' > N.
    events = _events(config, random.Random(f"{config.seed}/events"))
    chunks, paraphrases = [], []
    for event in events:
        text = _render(event, _FACT_ORDER, {f: 0 for f in _FACT_ORDER})
        chunks.append({"chunk_id": event.chunk_id, "article": event.title, "text": text})
        rng = random.Random(f"{config.seed}/paraphrases/{event.chunk_id}")
        paraphrases.append({"chunk_id": event.chunk_id, "paraphrases": _paraphrases(event, config.paraphrases, rng,
                                                                                    text)})
    questions = _questions(events, config, random.Random(f"{config.seed}/questions"))
    world = {"chunks": chunks, "questions": questions, "paraphrases": paraphrases,
             "facts": [{"chunk_id": e.chunk_id, "title": e.title, "kind": e.kind, **e.facts} for e in events]}
    if config.practice_events:
        practice = _practice(config, events, random.Random(f"{config.seed}/practice"))
        world["practice_chunks"] = [{"chunk_id": e.chunk_id, "article": e.title,
                                     "text": _render(e, _FACT_ORDER, {f: 0 for f in _FACT_ORDER})} for e in practice]
        world["practice_questions"] = _questions(practice, replace(config, asked=tuple(SLOTS)),
                                                 random.Random(f"{config.seed}/practice-questions"))
    return world


def write_world(config: FictionalConfig, out: Path) -> Path:
    """Generate the world and write it to ``out`` (replaced atomically): the current-events files
    (``chunks.jsonl``, ``questions.jsonl``, ``paraphrases.jsonl``), ``facts.jsonl``, ``manifest.json`` and, with
    practice events, ``practice_chunks.jsonl`` and ``practice_questions.jsonl``."""
    world = generate(config)
    with atomic_dir(Path(out)) as tmp:
        for name, records in world.items():
            with open(tmp / f"{name}.jsonl", "w", encoding="utf-8", newline="\n") as fh:
                fh.writelines(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
        manifest = {"generator": "lm_eval_kinject.fictional", "generator_version": GENERATOR_VERSION,
                    "config": config.to_dict(),
                    "counts": {name: len(records) for name, records in world.items()}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return Path(out)


def default_world(config: FictionalConfig = FictionalConfig()) -> Path:
    """The folder of the world ``config`` in the kinject cache, generated on first use."""
    from lm_eval_kinject.presets import cache_dir

    out = cache_dir() / "fictional" / config.name
    if not (out / "manifest.json").is_file():
        write_world(config, out)
    return out
