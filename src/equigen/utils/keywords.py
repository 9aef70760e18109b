"""Whole-word phrase matching on prompts: which prompts a method applies to (Fair Mapping skips
prompts that name a group; a culture LoRA applies only to prompts that name its cultures)."""

from __future__ import annotations

import re
from typing import Iterable


class KeywordDetector:
    """Does a prompt name one of these words? Whole-word, case-insensitive phrase matching."""

    def __init__(self, words: Iterable[str]):
        self.words = sorted({w.strip().lower() for w in words if w.strip()}, key=len, reverse=True)
        if not self.words:
            raise ValueError("a keyword detector needs at least one word")
        alternatives = "|".join(re.escape(w) for w in self.words)
        self._pattern = re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])", re.IGNORECASE)

    def __call__(self, prompt: str) -> bool:
        return self._pattern.search(prompt) is not None
