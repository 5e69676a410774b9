"""The page_pool signature test of the census (classify.rule_page_pool),
against the values the kernel stores in the word it shares with lru.next."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from vmcore_tools.census.classify import PP_SIGNATURE, rule_page_pool

LIST_POISON1, LIST_POISON2 = 0xDEAD000000000100, 0xDEAD000000000122      # include/linux/poison.h


def marked(words: list[int]) -> list[bool]:
    w = SimpleNamespace(pp_magic=np.array(words, np.uint64), nr=len(words))
    return rule_page_pool(w, None, None).tolist()


def test_the_signature_is_found_whatever_the_dma_index_and_low_bits():
    # 6.15+: the DMA index (1 to 2^32 - 1) lies in bits 7 to 38; bits 0-1 are netmem/compound flags
    indexes = [0, 1, 2, 3, 0x1234567, (1 << 32) - 1]
    assert marked([PP_SIGNATURE | i << 7 for i in indexes]) == [True] * len(indexes)
    assert marked([PP_SIGNATURE | 1, PP_SIGNATURE | 2]) == [True, True]


def test_list_words_are_not_the_signature():
    words = [LIST_POISON1, LIST_POISON2, 0xFFFF888004A3C0C8, 0, PP_SIGNATURE | 1 << 39, PP_SIGNATURE ^ 0x40]
    assert marked(words) == [False] * len(words)
