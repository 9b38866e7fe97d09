"""Additive 0–5 judge rubrics for the four Meta-rater dimensions (PRRC), in tamis's own words.

In the spirit of the Meta-rater prompts (Zhuang et al., 2025, arXiv 2504.14194, `prompts/*.txt`):
the judge starts at 0 and adds one point per criterion met, then ends its answer with a line
`<Dimension>: N`. Unlike the paper's cleanliness prompt (an overall 1–5 score plus sub-scores), all
four dimensions here use the same additive 0–5 form, so one parser reads every answer. Each
dimension's `prompt_version` hashes its full prompt: editing a rubric invalidates cached labels.
docs/meta_rater_rubrics.md prints the same text for people.
"""
from __future__ import annotations

import hashlib

DIMENSIONS = ("professionalism", "readability", "reasoning", "cleanliness")

SYSTEM = ("You are a careful annotator of pretraining data for language models. You judge one "
          "document at a time against a rubric and never invent content that is not in the document.")

RUBRICS: dict[str, str] = {
    "professionalism": """\
Rate the PROFESSIONALISM of the document: how much expertise it takes to write (and to understand) it.
Start at 0 points and add points as follows:
- Add 1 point if the document shows subject knowledge beyond everyday conversation: some specific
  facts, names or terms are used correctly.
- Add 1 point if it uses the vocabulary of a field accurately and consistently, as a practitioner would.
- Add 1 point if it explains concepts, methods or mechanisms in some depth instead of only naming
  them, for a reader who already knows the basics.
- Add 1 point if its content reflects specialised training: precise definitions, technical detail,
  procedures, quantities, or references to standards, data or literature.
- Add 1 point if it is expert-level throughout: dense, accurate and non-trivial content that a
  specialist could rely on (a research article, a technical reference, a legal or medical text).""",
    "readability": """\
Rate the READABILITY of the document: how easily a reader of its intended audience can follow it.
Start at 0 points and add points as follows:
- Add 1 point if most of the document consists of intelligible sentences or lines that a reader can follow.
- Add 1 point if grammar, spelling and punctuation are largely correct.
- Add 1 point if the ideas come in a logical order, with clear transitions, paragraphs or sections.
- Add 1 point if vocabulary and sentence length suit the intended audience, without needless
  convolution, jargon left unexplained for its audience, or run-on passages.
- Add 1 point if it reads effortlessly from start to finish: clear, concise and well structured.""",
    "reasoning": """\
Rate the REASONING in the document: how much logical thinking it contains and how sound it is.
Start at 0 points and add points as follows:
- Add 1 point if at least one statement is supported by a reason, cause or explanation.
- Add 1 point if several statements are connected into a line of argument or a chain of cause and effect.
- Add 1 point if it reasons in several steps: a derivation, a comparison of options, weighing of
  trade-offs, or the solution of a problem.
- Add 1 point if the reasoning is explicit and sound throughout, backed by evidence or examples and
  aware of limits or counter-arguments.
- Add 1 point if it shows deep analytical reasoning: rigorous proofs, careful multi-step analysis or
  synthesis of several lines of evidence into a conclusion.""",
    "cleanliness": """\
Rate the CLEANLINESS of the document: how free it is of noise, so that it could be used as training text as is.
Start at 0 points and add points as follows:
- Add 1 point if the document is text meant for people (prose, lists, dialogue, or code with its
  comments), not a dump of markup, identifiers, numbers or garbled characters.
- Add 1 point if it is free of formatting noise: leftover HTML or markup artefacts, broken character
  encoding, line breaks in the middle of sentences, or runs of stray symbols.
- Add 1 point if it is free of boilerplate: navigation menus, advertisements, cookie or legal
  notices unrelated to the content, share buttons, link lists, repeated headers or footers.
- Add 1 point if the content is complete: it does not stop mid-sentence and does not miss parts
  that its meaning depends on.
- Add 1 point if it is pristine: it could be published as it stands without any cleaning.""",
}

TEMPLATE = """\
{rubric}

Document:
<<<
{text}
>>>

First justify your rating in at most 100 words. Then end your answer with a final line of exactly
this form, where N is an integer from 0 to 5:
{label}: N"""


def label(dimension: str) -> str:
    """The word the judge's final line starts with, e.g. `Professionalism`."""
    return dimension.capitalize()


def prompt_version(dimension: str) -> str:
    """Short hash of the system prompt, template and rubric of one dimension."""
    blob = "\x1f".join((SYSTEM, TEMPLATE, RUBRICS[dimension]))
    return "v1-" + hashlib.sha1(blob.encode()).hexdigest()[:10]


def messages(dimension: str, text: str) -> list[dict]:
    """Chat-completions messages asking for one dimension's score of `text`."""
    user = TEMPLATE.format(rubric=RUBRICS[dimension], text=text, label=label(dimension))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
