"""Output quality the way the field reports it, from maintained implementations:
exact match (any reference counts), chrF and BLEU (sacrebleu), and character and
word error rates (edit distances from rapidfuzz). Used by training's held-out
report, export's judgement of quantized variants and the benchmarks; never by the
runtime, so apps do not carry these libraries."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

METRICS = ("exact_match", "chrf", "bleu", "cer", "wer")


@dataclass(frozen=True)
class Quality:
    # Share of outputs equal to one of their references (0 to 1).
    exact_match: float
    # sacrebleu's corpus chrF (character n-gram F-score, 0 to 100), all references.
    chrf: float
    # sacrebleu's corpus BLEU (0 to 100) on character tokens for character-level
    # targets (a date is one word, so word BLEU says nothing), else its 13a words.
    bleu: float
    # Character edit distance over reference characters, each output against its
    # closest reference (0 is perfect; can exceed 1).
    cer: float
    # The same over whitespace-separated words (phone error rate for phone strings).
    wer: float
    # Outputs judged.
    count: int

    def as_dict(self) -> dict:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}

    def line(self, lexicon: bool = False) -> str:
        """The figures in one line; for a lexicon without the token edit rate, which
        ``lexicon_line`` shows as PER (its WER is another figure)."""
        tail = "" if lexicon else f", WER {self.wer:.2%}"
        return (f"exact match {self.exact_match:.1%}, chrF {self.chrf:.1f}, BLEU "
                f"{self.bleu:.1f}, CER {self.cer:.2%}{tail}")


def references_of(targets: Sequence) -> list[list[str]]:
    """Each target as a list of references: a string is one reference."""
    return [[t] if isinstance(t, str) else list(t) for t in targets]


def measure(outputs: Sequence[str], targets: Sequence, char_level: bool = True) -> Quality:
    """Quality of ``outputs`` against ``targets`` (a reference string, or a list of
    them, per output)."""
    import sacrebleu
    from rapidfuzz.distance import Levenshtein

    refs = references_of(targets)
    if len(refs) != len(outputs) or not outputs or any(not r for r in refs):
        raise ValueError("need one output per target, and at least one reference each")
    hits = sum(out in r for out, r in zip(outputs, refs))
    width = max(map(len, refs))
    streams = [[r[i] if i < len(r) else None for r in refs] for i in range(width)]
    chrf = sacrebleu.corpus_chrf(list(outputs), streams).score
    bleu = sacrebleu.corpus_bleu(list(outputs), streams,
                                 tokenize="char" if char_level else "13a").score

    def rate(split) -> float:
        edits = length = 0
        for out, r in zip(outputs, refs):
            # The closest reference; among equally close ones the longest, so the
            # rate does not depend on the order the references come in.
            ref = min(r, key=lambda x: (Levenshtein.distance(split(out), split(x)),
                                        -len(split(x))))
            edits += Levenshtein.distance(split(out), split(ref))
            length += len(split(ref))
        return edits / max(length, 1)

    return Quality(hits / len(outputs), chrf, bleu, rate(list), rate(str.split),
                   len(outputs))


def is_lexicon(unit: str, target_unit: str) -> bool:
    """Characters in, whitespace-separated tokens out: a pronunciation lexicon
    (grapheme to phoneme), where each input is one word."""
    return unit == "char" and target_unit == "word"


def lexicon_rates(q: Quality) -> dict:
    """The grapheme-to-phoneme field's two figures (Rao et al. 2015; Bisani and Ney
    2008), named in full because ``Quality.wer`` is another figure:
    ``word_error_rate`` (the field's WER), the share of words whose output matches
    none of its references (1 - exact match), and ``phone_error_rate`` (PER), phone
    edits over reference phones against each word's closest reference
    (``Quality.wer``, whose words are the phones)."""
    return {"word_error_rate": round(1 - q.exact_match, 6),
            "phone_error_rate": round(q.wer, 6)}


def lexicon_line(q: Quality) -> str:
    r = lexicon_rates(q)
    return (f"WER {r['word_error_rate']:.2%} (words with a phone wrong), PER "
            f"{r['phone_error_rate']:.2%} (phone edit rate)")
