"""Random English phrases and espeak voices, deterministic per random generator.

The vocabulary leans on what lips show: bilabials (b/p/m), labiodentals (f/v), rounded vowels
(o/u/w) and wide vowels (ee/ay/ah), so the mouth has plenty of distinct shapes to follow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_WORDS = """
a about above after again all also always am an and any apple are arm around as ask at away
baby back bad bag ball band bank bar base bat bath be beach bean bear beat beauty became because
bed bee been beef before began behind being believe below best better between big bike bill bird
bit black blue boat body bone book boom boot born both bottle bottom bought bowl box boy brave
bread break bright bring broad brown bubble build busy but butter buy by cab came camp can cap
car cat cheap cheese chop cool cup cut day deep did do dog done door down dream drop each early
easy eat egg eight even ever every face fact fair fall family far farm fast father fee feel feet
felt few field fifth fifty fight fill find fine fire fish five flat flew floor flow food fool
foot for form four free fresh friday friend from front fruit full fun funny give go gone good
got great green grew group half hand happy hat have he heavy help her here high him home hope
hot house how huge i ice if in into it jump just keep kind knew know lamp large late leave left
let life light like lip live long look loop loose love low lunch made make man many map may me
mean meet men met milk mind mine miss model mom money month moon mop more morning most mother
mouth move movie much mud music must my name near need never new next nice night no noon not
now of off often oh oil old on one open other our out over own page paid paint palm paper park
part party pass past path pay peach peak pen people pepper perfect pick pie piece pig pink pipe
place plan play please plum pocket point pool poor pop pot power press pretty price pull pump
push put quick rain read ready red remember rope round rule run safe same say school sea see
seem seven she shoe shop show sleep slow small smooth so some soon soup speak spoon spring stop
summer sun sweet table take talk team tell ten than that the them then there these they thing
think this three through time to today too tooth top true two under up upon us use very view
village visit voice vote wait wake walk want warm was watch water wave way we week well were
what when where which while white who whole why wide will wind window with woman women wood
wool word work would wow yes you young your zoo
""".split()  # noqa: SIM905 - a word block is easier to read and extend than a list

# espeak-ng voices and variants that are present in Debian's espeak-ng-data; the mouth does not
# care which, but the audio model should hear many speakers.
_BASE_VOICES = ("en-us", "en", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-gb-x-gbclan")
_VARIANTS = ("", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+m7", "+f1", "+f2", "+f3", "+f4",
             "+f5", "+klatt", "+klatt2", "+klatt3", "+croak")


@dataclass(frozen=True)
class Voice:
    """espeak-ng voice name (with variant), speaking rate (words per minute), pitch 0-99, range 0-99."""

    name: str
    rate_wpm: int
    pitch: int
    pitch_range: int


def random_voice(rng: np.random.Generator) -> Voice:
    base = _BASE_VOICES[rng.integers(len(_BASE_VOICES))]
    variant = _VARIANTS[rng.integers(len(_VARIANTS))]
    return Voice(name=base + variant, rate_wpm=int(rng.integers(135, 215)),
                 pitch=int(rng.integers(25, 75)), pitch_range=int(rng.integers(25, 85)))


def random_phrase(rng: np.random.Generator, min_words: int = 2, max_words: int = 9) -> str:
    """A phrase of random vocabulary words (no punctuation: pauses are placed by the caller)."""
    n = int(rng.integers(min_words, max_words + 1))
    return " ".join(_WORDS[i] for i in rng.integers(0, len(_WORDS), size=n))


def vocabulary() -> tuple[str, ...]:
    return tuple(_WORDS)
