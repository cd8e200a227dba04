"""The custom-conversion workload of the in-process rule benchmarks (``bench rules``,
``scaling``, ``builds``), and of ``bench grpc`` and ``service`` given ``--workload``: rules
per pixel, a stream of pixel events, deterministic for a seed.

``pixels`` advertisers (event sources), each with ``rules_per_pixel`` custom conversions, and
events whose pixels follow a Zipf-like popularity. What the rules and events are like is a
*mix*: a named preset (``--workload``), each part of which an explicit knob overrides:

- ``--operators urls=3,regex=1``: how often each kind of rule occurs (``RULE_KINDS``). A
  pixel's k-th rule is of kind ``cycle[k % len(cycle)]``, the cycle interleaving the kinds in
  proportion to their whole weights (smooth weighted round robin), so every pixel gets the
  same mix and choosing kinds draws nothing from the seeded generator;
- ``--event-mix Purchase=5,PageView=1``: the standard events' weights in the stream;
- ``--skew 1.0``: the exponent s of the pixels' popularity, pixel rank r drawn with weight
  1 / (r + 1) ** s (0: uniform; larger: a few pixels get most events).

The ``mixed`` preset is the workload every published figure up to 2026-11-24 was measured on:
its rules, sources and events are byte for byte those of the generator before presets existed
(``tests/test_bench_smoke.py`` pins their hash), so the mix code must not draw from the
generator in any other order for it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from dataclasses import dataclass, field
from itertools import accumulate

from bench import cli

STANDARD_EVENTS = ["PageView", "ViewContent", "AddToCart", "InitiateCheckout", "Purchase", "Lead", "Search",
                   "CompleteRegistration"]
EVENT_WEIGHTS = [50, 20, 10, 5, 8, 3, 3, 1]
CATEGORIES = ["shoes", "bags", "hats", "shirts", "watches", "toys", "books", "garden"]
FIRST_PIXEL_ID = 1000  # pixel p's id (its rules' source, its events' pixel_id) is this + p
RULES_PER_PIXEL = 100  # a named workload's rules on each pixel, unless given (every bench's default)
# Custom data the service's typed forms cannot carry (a list: only the JSON text form can) and
# no rule kind reads: left out of the events a service is sent (``wire_events``).
UNSENT_CUSTOM_DATA = ("content_ids",)


@dataclass
class Workload:
    rules: dict[str, str]  # id -> JSON text, as a service receives them
    sources: dict[str, str]
    events: list[dict]


# The kinds of rule, each a function (rng, pixel, k, token) -> rule. The first six, in this
# order, are the ``mixed`` workload's cycle: do not reorder them or put a kind before them.
def _urls(rng, pixel, k, token):  # URL substring OR (the commonest custom conversion)
    return {"or": [{"url": {"i_contains": f"/thankyou-{token}"}}, {"url": {"i_contains": f"/confirmation/{token}"}}]}


def _value(rng, pixel, k, token):  # a standard event above a value
    return {"and": [{"event": {"eq": rng.choice(["Purchase", "InitiateCheckout"])}},
                    {"value": {"gt": rng.choice([20, 50, 100, 250, 1000])}}]}


def _regex(rng, pixel, k, token):  # a regex on the URL
    return {"url": {"regex_match": rf"/product/\d+/{token}(/|$)"}}


def _parameters(rng, pixel, k, token):  # custom parameter equality with an event
    return {"and": [{"event": "AddToCart"}, {"category": {"eq": f"{rng.choice(CATEGORIES)}-{k % 20}"}}]}


def _nested(rng, pixel, k, token):  # nested and/or/not
    return {"and": [{"event": {"is_any": ["Purchase", "Lead"]}},
                    {"or": [{"path": {"starts_with": f"/checkout/{token}"}},
                            {"content_type": {"i_is_any": ["Product", token]}}]},
                    {"not": {"url": {"contains": "test=1"}}}]}


def _filters(rng, pixel, k, token):  # audience filter syntax, as Ads Manager writes it
    return {"operator": "and", "filters": [
        {"field": "event", "operator": "eq", "value": "ViewContent"},
        {"field": "URL", "operator": "i_contains", "value": f"/landing/{token}"},
    ]}


def _prefix(rng, pixel, k, token):  # the start of the path or of the whole URL
    return {"or": [{"path": {"starts_with": f"/checkout/{token}"}},
                   {"url": {"starts_with": f"https://shop{pixel}.example.com/landing/{token}"}}]}


def _path_regex(rng, pixel, k, token):  # a regex on the path: a blog post, with or without a slash
    return {"path": {"regex_match": rf"^/blog/post-{k}/?$"}}


def _range(rng, pixel, k, token):  # a purchase's value in a band
    low = rng.choice([10, 25, 50, 100, 250])
    return {"and": [{"event": "Purchase"}, {"value": {"gte": low}}, {"value": {"lt": low * 4}}]}


RULE_KINDS = {"urls": _urls, "value": _value, "regex": _regex, "parameters": _parameters, "nested": _nested,
              "filters": _filters, "prefix": _prefix, "path_regex": _path_regex, "range": _range}


@dataclass(frozen=True)
class Mix:
    """What a workload's rules and events are like (see the module's doc)."""
    name: str
    operators: dict[str, int]  # rule kind -> whole weight
    events: dict[str, int]  # standard event -> weight
    skew: float
    overridden: tuple[str, ...] = field(default=())  # the knobs given over the preset's

    def describe(self) -> str:
        """One line for a table's header."""
        given = f" with {', '.join(self.overridden)} given" if self.overridden else ""
        return (f"workload {self.name}{given}: rule kinds {_pairs(self.operators)}; "
                f"events {_pairs(self.events)}; pixel skew {self.skew:g}")

    def as_json(self) -> dict:
        return {"name": self.name, "operators": self.operators, "event_mix": self.events, "skew": self.skew,
                "overridden": list(self.overridden)}

    @classmethod
    def from_json(cls, data: dict) -> Mix:
        """The mix ``as_json`` wrote (a child process's report)."""
        return cls(data["name"], data["operators"], data["event_mix"], data["skew"], tuple(data["overridden"]))


def _pairs(weights: dict[str, int]) -> str:
    return ",".join(f"{name}={weight}" for name, weight in weights.items() if weight)


_DEFAULT_EVENTS = dict(zip(STANDARD_EVENTS, EVENT_WEIGHTS))
PRESETS = {
    # Every kind of the original cycle once: today's default, and every figure published so far.
    "mixed": Mix("mixed", {"urls": 1, "value": 1, "regex": 1, "parameters": 1, "nested": 1, "filters": 1},
                 _DEFAULT_EVENTS, 1.0),
    # Landing and thank-you pages: URL substrings and prefixes, the literal scanner's work.
    "urls": Mix("urls", {"urls": 3, "prefix": 2, "filters": 1}, _DEFAULT_EVENTS, 1.0),
    # Regexes on the URL and the path dominate: the RE2 sets' work.
    "regex": Mix("regex", {"regex": 3, "path_regex": 2, "urls": 1}, _DEFAULT_EVENTS, 1.0),
    # Purchases above a value or in a band; the events are mostly ones that carry a value.
    "numeric": Mix("numeric", {"value": 3, "range": 2, "parameters": 1},
                   {"PageView": 10, "ViewContent": 10, "AddToCart": 20, "InitiateCheckout": 20, "Purchase": 40},
                   1.0),
    # A custom parameter's equality (category) with an event; the events mostly add to a cart.
    "parameters": Mix("parameters", {"parameters": 4, "value": 1, "filters": 1},
                      {"PageView": 15, "ViewContent": 5, "AddToCart": 50, "InitiateCheckout": 10, "Purchase": 20},
                      1.0),
}


def mix(name: str = "mixed", operators: dict[str, int] | None = None, event_mix: dict[str, int] | None = None,
        skew: float | None = None) -> Mix:
    """The preset ``name``, each knob given replacing that part of it whole (kinds or events
    not named in a knob get weight 0)."""
    if name not in PRESETS:
        raise ValueError(f"unknown workload {name!r} (choose from {', '.join(PRESETS)})")
    preset = PRESETS[name]
    given = tuple(option for option, value in (("--operators", operators), ("--event-mix", event_mix),
                                                ("--skew", skew)) if value is not None)
    return Mix(name, operators if operators is not None else preset.operators,
               event_mix if event_mix is not None else preset.events,
               skew if skew is not None else preset.skew, given)


def operator_weights(text: str) -> dict[str, int]:
    """``--operators``: weights per rule kind."""
    return _named_weights(text, RULE_KINDS, "rule kind")


def event_weights(text: str) -> dict[str, int]:
    """``--event-mix``: weights per standard event name."""
    return _named_weights(text, STANDARD_EVENTS, "standard event")


def _named_weights(text: str, names, what: str) -> dict[str, int]:
    found = cli.weights(text)
    if unknown := [name for name in found if name not in names]:
        raise argparse.ArgumentTypeError(f"unknown {what} {unknown[0]!r} (choose from {', '.join(names)})")
    return found


def kind_cycle(operators: dict[str, int]) -> list[str]:
    """The kinds in proportion to their weights, interleaved (smooth weighted round robin: each
    step every kind gains its weight and the one furthest ahead, the first on a tie, is taken
    and set back by the total). Weight 1 each gives the kinds in ``RULE_KINDS`` order."""
    total = sum(operators.values())
    credit = dict.fromkeys(RULE_KINDS, 0)
    cycle = []
    for _ in range(total):
        for name in credit:
            credit[name] += operators.get(name, 0)
        chosen = max(credit, key=credit.__getitem__)
        credit[chosen] -= total
        cycle.append(chosen)
    return cycle


def make_rule(rng: random.Random, pixel: int, k: int, kind: str) -> dict:
    return RULE_KINDS[kind](rng, pixel, k, f"p{pixel}x{k}")


def make_event(rng: random.Random, pixel_cum_weights: list[float], pixels: int, rules_per_pixel: int,
               event_cum_weights: list) -> dict:
    # (``choices`` given cumulative weights draws exactly what it draws given the weights: it
    # accumulates them itself; summing them once per run instead of once per event is faster.)
    pixel = rng.choices(range(pixels), cum_weights=pixel_cum_weights)[0]
    event = rng.choices(STANDARD_EVENTS, cum_weights=event_cum_weights)[0]
    k = rng.randrange(rules_per_pixel * 2)  # half the tokens exist in some rule
    token = f"p{pixel}x{k}"
    path = rng.choice([f"/thankyou-{token}", f"/product/{rng.randrange(10**6)}/{token}", f"/checkout/{token}/pay",
                       f"/landing/{token}", "/", "/cart", f"/blog/post-{k}", f"/confirmation/{token}"])
    query = rng.choice(["", "?utm_source=fb", "?test=1", "?ref=home&utm_medium=cpc"])
    custom = {"currency": "USD"}
    if event in ("Purchase", "InitiateCheckout", "AddToCart"):
        custom["value"] = round(rng.lognormvariate(3.5, 1.2), 2)
        custom["category"] = f"{rng.choice(CATEGORIES)}-{rng.randrange(20)}"
        custom["content_ids"] = [f"sku-{rng.randrange(1000)}" for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.3:
        custom["content_type"] = rng.choice(["product", "product_group"])
    return {"event": event, "url": f"https://shop{pixel}.example.com{path}{query}", "custom_data": custom,
            "pixel_id": f"{FIRST_PIXEL_ID + pixel}", "device_type": rng.choice(["desktop", "mobile_iphone", "mobile_android"])}


def make_workload(pixels: int, rules_per_pixel: int, events: int, seed: int, spec: Mix | None = None) -> Workload:
    """The rules, their sources and the events of ``spec`` (default: the ``mixed`` preset)."""
    spec = spec if spec is not None else PRESETS["mixed"]
    if pixels < 1 or rules_per_pixel < 1 or events < 0:
        raise ValueError(f"make_workload: pixels and rules_per_pixel must be 1 or more and events 0 or more, "
                         f"got {pixels}, {rules_per_pixel}, {events}")
    rng = random.Random(seed)
    cycle = kind_cycle(spec.operators)
    rules, sources = {}, {}
    for pixel in range(pixels):
        for k in range(rules_per_pixel):
            rid = f"cc_{pixel}_{k}"
            rules[rid] = json.dumps(make_rule(rng, pixel, k, cycle[k % len(cycle)]))
            sources[rid] = f"{FIRST_PIXEL_ID + pixel}"
    pixel_weights = list(accumulate(1.0 / (rank + 1) ** spec.skew for rank in range(pixels)))  # Zipf-like
    event_weights = list(accumulate(spec.events.get(name, 0) for name in STANDARD_EVENTS))
    return Workload(rules, sources, [make_event(rng, pixel_weights, pixels, rules_per_pixel, event_weights)
                                     for _ in range(events)])


def layout(count: int, per_pixel: int) -> tuple[int, int]:
    """(pixels, rules per pixel) of ``count`` rules at ``per_pixel`` a pixel: one pixel holding
    them all when ``count`` is at most ``per_pixel``, else ``count / per_pixel`` full pixels.
    ValueError for any other count: it could only be measured as a different one, so it is
    refused, not rounded."""
    if count < 1 or per_pixel < 1:
        raise ValueError(f"a rule count and rules per pixel of 1 or more are needed, got {count} and {per_pixel}")
    if count > per_pixel and count % per_pixel:
        raise ValueError(f"{count} rules cannot be laid out as {per_pixel} per pixel: give a count "
                         f"under {per_pixel} (one pixel) or a multiple of {per_pixel}")
    per = min(count, per_pixel)
    return count // per, per


def wire_events(events: list[dict]) -> list[dict]:
    """The events as a service is sent them (``bench grpc``, ``bench service``): the same, but
    custom data without ``UNSENT_CUSTOM_DATA`` (``content_ids``, a list), which typed custom
    parameter columns and buffers cannot carry and no rule kind reads; so every request form
    carries the same events, and every match is the one of the events as generated."""
    return [{**event, "custom_data": {name: value for name, value in event["custom_data"].items()
                                      if name not in UNSENT_CUSTOM_DATA}} for event in events]


def workload_hash(work: Workload) -> str:
    """SHA-256 of the rules, sources and events as JSON, in their order: two runs' workloads
    are the same exactly when these are (recorded in the JSON reports)."""
    digest = hashlib.sha256()
    for part in (work.rules, work.sources, work.events):
        digest.update(json.dumps(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def add_workload_options(ap: argparse.ArgumentParser) -> None:
    """The options naming a ``make_workload`` workload and its batches (``bench rules``,
    ``scaling`` takes the mix ones through ``add_mix_options``, ``builds``)."""
    ap.add_argument("--pixels", type=cli.positive_int, default=100, help="event sources (advertisers)")
    ap.add_argument("--rules-per-pixel", type=cli.positive_int, default=RULES_PER_PIXEL,
                    help=f"custom conversions per pixel (default {RULES_PER_PIXEL})")
    ap.add_argument("--events", type=cli.positive_int, default=200_000, help="pixel events matched")
    ap.add_argument("--batch", type=cli.positive_int, default=1000, help="events per call")
    ap.add_argument("--seed", type=int, default=1, help="the workload's random seed")
    add_mix_options(ap)


def add_mix_options(ap: argparse.ArgumentParser, default: str | None = "mixed", otherwise: str = ""
                    ) -> list[argparse.Action]:
    """``--workload`` and the knobs overriding it (returned, as added). ``default`` None: no
    named workload unless one is given (``bench grpc``, ``service``: their own seed-style one),
    ``otherwise`` saying what is used then; ``optional_mix`` reads them."""
    return [ap.add_argument("--workload", choices=list(PRESETS), default=default,
                            help="a named mix of rules and events: mixed (every kind alike; the published "
                                 "figures'), urls (URL substrings and prefixes), regex (regexes on URL and path), "
                                 "numeric (event and value thresholds), parameters (custom-parameter equality)"
                                 + (f"; without it: {otherwise}" if default is None and otherwise else "")),
            ap.add_argument("--operators", type=operator_weights, metavar="KIND=W,...",
                            help=f"weights per rule kind, replacing the workload's ({', '.join(RULE_KINDS)})"),
            ap.add_argument("--event-mix", type=event_weights, metavar="EVENT=W,...",
                            help="weights per standard event name, replacing the workload's"),
            ap.add_argument("--skew", type=cli.nonnegative_float,
                            help="exponent s of the pixels' popularity, weight 1/(rank+1)**s (0: uniform); default 1")]


def mix_from(args: argparse.Namespace) -> Mix:
    """The mix the parsed options name."""
    return mix(args.workload, args.operators, args.event_mix, args.skew)


def optional_mix(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Mix | None:
    """The mix the parsed options name, None when no ``--workload`` was given (options added
    with ``add_mix_options(ap, default=None)``); a knob without ``--workload`` is an argparse
    error naming it (it would adjust no named workload)."""
    if args.workload is None:
        for option, value in (("--operators", args.operators), ("--event-mix", args.event_mix), ("--skew", args.skew)):
            if value is not None:
                parser.error(f"argument {option}: adjusts a named workload: give --workload too "
                             f"(e.g. --workload mixed {option} ...)")
        return None
    return mix_from(args)


def mix_argv(args: argparse.Namespace) -> list[str]:
    """The mix options again, for a child process (as given, so the child resolves the same mix)."""
    argv = ["--workload", args.workload]
    if args.operators is not None:
        argv += ["--operators", ",".join(f"{k}={w}" for k, w in args.operators.items())]
    if args.event_mix is not None:
        argv += ["--event-mix", ",".join(f"{k}={w}" for k, w in args.event_mix.items())]
    if args.skew is not None:
        argv += ["--skew", repr(args.skew)]
    return argv
