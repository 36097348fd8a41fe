"""Injection: catalog text, CRM notes and support questions are data, never instructions.

``detect`` finds instruction-like text anywhere in a string; ``neutralize`` defangs it before the text may
enter a prompt (where it also sits inside a delimited data block). Neither can change rankings, products,
links or recipients: those never come from model output."""

from __future__ import annotations

import base64
import re
import time
import unicodedata

from guardrails.base import Finding, RailContext, Verdict

__all__ = ["check", "detect", "name", "neutralize"]

name = "injection"

_ADDRESS = r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*"
_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (rule, re.compile(p, re.IGNORECASE))
    for rule, p in (
        (
            "override",
            r"\b(?:ignore|disregard|forget|override|bypass)\b.{0,40}\b(?:previous|prior|above|earlier|all|"
            r"your|the)\b.{0,30}\b(?:instructions?|prompts?|rules?|guidelines?|directions?|messages?)\b",
        ),
        (
            "role_play",
            r"\b(?:you are now|act as|pretend (?:to be|you are)|from now on,? you|new instructions?:|"
            r"your new (?:task|role|instructions?))",
        ),
        (
            "role_tag",
            r"(?:^|\n|\s)(?:system|assistant|developer|user)\s*:|<\|?(?:im_start|im_end|system|assistant)"
            r"\|?>|\[/?(?:INST|SYS)\]|<<\s*SYS\s*>>",
        ),
        (
            "ranking_manipulation",
            r"\b(?:recommend|promote|rank|feature|prioriti[sz]e|push)\b.{0,40}\b(?:above|over|"
            r"before|instead of)\b.{0,20}\b(?:all|every|other|any)\b",
        ),
        ("link_insertion", r"\b(?:include|insert|add|append|put)\b.{0,30}\b(?:link|url|website|href)\b"),
        (
            "recipient_change",
            r"\b(?:send|forward|email|cc|bcc)\b.{0,30}\b(?:this|the email|it|a copy)\b.{0,20}\b"
            r"(?:to|at)\b\s+\S+@\S+",
        ),
        # Headers and verbs that point a message at an address: "bcc: x@…", "Reply-To: x@…", "cc x@… on
        # this", "Change the recipient to x@…", "Email the order summary to x@…", "Deliver this to x@…".
        (
            "recipient_change",
            r"(?<![\w-])(?:b?cc|to|reply[- ]?to|send[- ]?to|deliver[- ]?to|recipients?)\s*:\s*"
            + _ADDRESS
            + r"|\bb?cc\b\s+(?:in\s+|to\s+)?"
            + _ADDRESS
            + r"|\b(?:change|set|switch|update|replace|make)\b.{0,20}\b(?:recipients?|addressee|destination|"
            r"to[- ]address|reply[- ]to)\b.{0,20}"
            + _ADDRESS
            + r"|\b(?:e-?mail|mail|send|forward|deliver|address|direct|redirect|route|copy|bcc|cc)\b"
            r"[^.?!\n]{0,40}?\bto\s+" + _ADDRESS,
        ),
        (
            "exfiltration",
            r"\b(?:reveal|print|show|repeat|output)\b.{0,30}\b(?:system prompt|instructions|other "
            r"customers?|api key|password|secret)",
        ),
        # A claimed authority ("I'm the store manager", "as the developer of this bot") asking to set
        # policy aside or to act with powers a support answer does not have.
        (
            "authority_claim",
            r"\b(?:i'?m|i am|im|this is|as|speaking as)\s+(?:the|a|an|your|this)?\s*(?:store |shop |site |"
            r"head |general |senior |regional |account |system |lead )?(?:manager|admin(?:istrator)?|"
            r"developer|owner|ceo|supervisor|engineer|operator|moderator|founder|programmer|creator)\b"
            r"(?:\s+of\s+(?:this|the)\s+\w+)?[,;:.\s]+.{0,40}?\b(?:skip|bypass|ignore|override|waive|"
            r"disable|switch off|turn off|i need you to|you must)\b",
        ),
        (
            "policy_bypass",
            r"\b(?:skip|bypass|ignore|override|circumvent|get around|suspend)\b.{0,20}\b(?:the\s+|your\s+)?"
            r"(?:usual\s+|normal\s+|standard\s+|refund\s+|return\s+)?(?:polic(?:y|ies)|checks?|verification|"
            r"safeguards?|guardrails?|restrictions?)\b",
        ),
        (
            "filter_disable",
            r"\b(?:switch|turn|shut)\s+off\b.{0,20}\b(?:your|the bot'?s|its|all)\s+(?:safety\s+|"
            r"content\s+)?(?:filters?|guardrails?|safeguards?|safety|moderation|restrictions?|rules)\b"
            r"|\b(?:switch|turn|shut)\s+off\s+(?:the\s+)?(?:safety|content)\s+(?:filters?|checks?|rules)\b"
            r"|\b(?:disable|deactivate|remove|lift|drop)\b.{0,10}\b(?:your|the bot'?s|its|all)\s+"
            r"(?:safety\s+|content\s+)?(?:filters?|guardrails?|safeguards?|moderation|restrictions?)\b"
            r"|\b(?:safety|content) filters? (?:off|disabled)\b|\bjailbreak|\bdeveloper mode\b|\bdan mode\b",
        ),
        # Asking the bot for its own instructions.
        (
            "prompt_extraction",
            r"\b(?:instructions?|rules|guidelines|directives|prompt)\s+(?:that\s+)?"
            r"(?:you\s+(?:were|have been|'ve been|got)|you're|you are)\s+"
            r"(?:given|told|programmed|following|running)"
            r"|\b(?:what|tell me|show me|share|list|give me|repeat|recite|summari[sz]e)\b.{0,25}\byour\s+"
            r"(?:system\s+|initial\s+|original\s+|hidden\s+|secret\s+|internal\s+)?(?:prompt|instructions|"
            r"guidelines|directives|configuration)\b"
            r"|\b(?:system|initial|hidden|original) prompt\b",
        ),
        ("prompt_leak_markup", r"```\s*(?:system|prompt)|</?(?:instructions?|prompt|system)>"),
    )
)
_B64 = re.compile(r"\b[A-Za-z0-9+/]{24,}={0,2}")


def _normalize(text: str) -> str:
    # Homoglyphs and full-width letters fold to ASCII under NFKC; zero-width characters hide words.
    return _ZERO_WIDTH.sub("", unicodedata.normalize("NFKC", text))


def detect(text: str) -> list[Finding]:
    findings: list[Finding] = []
    clean = _normalize(text)
    for rule, pattern in _PATTERNS:
        for m in pattern.finditer(clean):
            findings.append(Finding(rule, f"instruction-like text {m.group().strip()!r}", m.start(), m.end()))
    for m in _B64.finditer(clean):
        try:
            decoded = base64.b64decode(m.group() + "=" * (-len(m.group()) % 4), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            continue
        if any(p.search(decoded) for _, p in _PATTERNS):
            findings.append(Finding("encoded_instruction", "base64-encoded instructions", m.start(), m.end()))
    if clean != text and _ZERO_WIDTH.search(text):
        findings.append(Finding("hidden_characters", "zero-width characters", severity="warn"))
    return findings


def neutralize(text: str) -> str:
    """The text with every detected instruction replaced by a marker, safe to place in a data block."""
    clean = _normalize(text)
    spans = sorted((f.start, f.end) for f in detect(clean) if f.start >= 0)
    out, last = [], 0
    for s, e in spans:
        if s < last:  # overlaps the text just removed: remove the rest of it too
            last = max(last, e)
            continue
        out.append(clean[last:s])
        out.append("[removed instruction-like text]")
        last = e
    out.append(clean[last:])
    # Delimiters of our own data blocks must not be forgeable from inside the data.
    return "".join(out).replace("<<<", "‹‹‹").replace(">>>", "›››")


def check(text: str, context: RailContext) -> Verdict:
    start = time.perf_counter()
    findings = tuple(detect(text))
    passed = not any(f.severity == "block" for f in findings)
    return Verdict(name, passed, findings, (time.perf_counter() - start) * 1000)
