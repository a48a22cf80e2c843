"""Matching class names across spellings: the split files, the sketch folders and the photo folders
of one dataset spell the same class differently (`alarm_clock` / `alarm clock`, `teddy-bear` /
`teddybear`, `Bear (Animal)` / `bearanimal`). A name matches a candidate by the first rule that
finds exactly one: the same text; the same words (case, `_` and spaces ignored); the same letters
and digits (all punctuation ignored)."""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping

_SEPARATORS = re.compile(r"[\s_]+")
_NOT_ALNUM = re.compile(r"[\W_]+")


def words_key(name: str) -> str:
    """`Alarm_Clock` -> `alarm clock`: case and `_` / space runs ignored."""
    return _SEPARATORS.sub(" ", name.casefold()).strip()


def letters_key(name: str) -> str:
    """`bear (animal)` -> `bearanimal`: only letters and digits, case ignored."""
    return _NOT_ALNUM.sub("", name.casefold())


_RULES = (lambda name: name, words_key, letters_key)


def match_name(name: str, candidates: Iterable[str]) -> str | None:
    """The one candidate `name` matches (see the module docstring), or None when none or several do."""
    candidates = list(dict.fromkeys(candidates))
    for rule in _RULES:
        key = rule(name)
        found = [c for c in candidates if rule(c) == key]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            return None  # ambiguous at this rule: a looser rule would only be more so
    return None


def match_names(names: Iterable[str], candidates: Iterable[str], aliases: Mapping[str, str] | None = None,
                ) -> dict[str, str]:
    """name -> the candidate it matches, for every name that matches one (`aliases`: name -> a
    spelling to match instead, for the misspellings no rule can mend)."""
    candidates = list(dict.fromkeys(candidates))
    found = {}
    for name in dict.fromkeys(names):
        match = match_name((aliases or {}).get(name, name), candidates)
        if match is not None:
            found[name] = match
    return found


def closest_names(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Up to `n` candidates spelled most like `name` (for error messages), closest first."""
    by_key: dict[str, list[str]] = {}
    for candidate in candidates:
        by_key.setdefault(words_key(candidate), []).append(candidate)
    keys = difflib.get_close_matches(words_key(name), list(by_key), n=n, cutoff=0.5)
    return [c for key in keys for c in by_key[key]][:n]
