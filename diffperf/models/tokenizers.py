"""Tokenizers built in code (no downloads), of the classes the real pipelines use.

Each has a small vocabulary: every single byte or character, plus whole-word tokens for a
fixed English word list (prompt words, and the words of the instructions the SANA and Lumina2
pipelines put before every prompt), so a prompt splits into about as many tokens as with the
real tokenizer. That matters where the token count sets the compute: Z-Image keeps only the
unpadded tokens, Kandinsky3 cuts its context to the longest prompt, SANA sizes the Gemma input
from its instruction's token count. Elsewhere the pipelines pad to a fixed length (77 for CLIP,
max_sequence_length for T5/Gemma), which the tokenizers honour like the real ones.

The BPE merges are learned here, in Python, with fixed tie-breaking: the vocabulary is the same
in every process (tokenizers' own trainer breaks ties in hash-map order).
All ids stay below MAX_VOCAB, under the vocab_size of every text encoder (tiny ones too).
"""
from __future__ import annotations

import functools
import heapq
import re
from collections import defaultdict

from tokenizers import Regex, normalizers, pre_tokenizers

MAX_VOCAB = 4096

# Prompt-like English, then the words of SANA's complex_human_instruction and Lumina2's
# system prompt (diffusers 0.42), so those instructions tokenize to about their real length.
_TEXT = """
a an the of and or in on at to for with by from as is are was were be been being it its this
that these those there here his her their our your my we you they he she i me us them who what
which when where why how all any some no not one two three four five many more most other such
only own same so than too very can will just should now up down out over under above below
between into through during before after again further then once off about against while
photo photograph picture image painting drawing portrait landscape scene view close-up closeup
astronaut riding horse mars moon space planet earth sky sun star stars cloud clouds rain snow
cat dog bird fish tree trees flower flowers forest mountain mountains river lake sea ocean beach
city street road building buildings house window door room table chair car bus train boat
man woman person people child girl boy face eyes hair hand hands head body dress shirt hat
red green blue yellow orange purple pink black white gray grey brown golden silver dark light
bright colorful vivid soft warm cold big small large tiny tall short long round old young new
beautiful cute happy sad sitting standing walking running flying holding wearing looking
detailed realistic cinematic lighting style art digital oil watercolor sketch high quality
resolution sharp focus background foreground night day morning evening sunset sunrise winter
summer spring autumn fall water fire ice glass metal wood stone paper neon sign says hello world
cyberpunk futuristic fantasy magic castle dragon robot spaceship vintage retro modern minimal
studio camera lens shot wide angle hdr masterpiece best ultra highly intricate elegant
user assistant system prompt
Given generate Enhanced provides visual descriptions suitable generation Evaluate level detail
If simple adding specifics colors shapes sizes textures spatial relationships create concrete
scenes already refine enhance existing details slightly without overcomplicating Here examples
transform prompts User Prompt A sleeping fluffy curled shape peacefully sunny windowsill
surrounded pots blooming busy bustling dusk featuring glowing lamps diverse crowd clothing
double decker passing towering skyscrapers Please enhanced description avoid including
additional commentary evaluations You designed superior images degree text alignment based
textual Start
"""


@functools.lru_cache(maxsize=1)
def _words() -> tuple[str, ...]:
    words: dict[str, None] = {}
    for w in re.findall(r"[A-Za-z]+", _TEXT):
        words[w] = None
        words[w.lower()] = None
        words[w.capitalize()] = None
    return tuple(words)


# Both forms of each word: after a space and at the start of a text or line
_CORPUS = " ".join(_words()) + "\n" + "\n".join(_words())

_CHARS = [chr(c) for c in range(32, 127)] + ["\n", "\t"]


def _learn_merges(words: list[tuple[str, ...]], limit: int) -> list[tuple[str, str]]:
    """BPE merges over word types until each word is one token (or `limit` merges).

    Pairs are merged by how many word types hold them, ties going to the smaller pair, so the
    result depends on nothing but the input.
    """
    seqs = [list(w) for w in dict.fromkeys(words) if len(w) > 1]
    counts: dict[tuple[str, str], int] = defaultdict(int)
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, s in enumerate(seqs):
        for p in zip(s, s[1:]):
            counts[p] += 1
            where[p].add(i)
    heap = [(-c, p) for p, c in counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    while heap and len(merges) < limit:
        neg, pair = heapq.heappop(heap)
        if counts.get(pair, 0) != -neg or -neg <= 0:
            continue  # stale entry
        merges.append(pair)
        a, b = pair
        changed: set[tuple[str, str]] = set()
        for i in sorted(where.pop(pair)):
            s = seqs[i]
            for p in zip(s, s[1:]):
                counts[p] -= 1
                changed.add(p)
            out, j = [], 0
            while j < len(s):
                if j + 1 < len(s) and s[j] == a and s[j + 1] == b:
                    out.append(a + b)
                    j += 2
                else:
                    out.append(s[j])
                    j += 1
            seqs[i] = out
            for p in zip(out, out[1:]):
                counts[p] += 1
                where[p].add(i)
                changed.add(p)
        counts.pop(pair, None)
        changed.discard(pair)
        for p in sorted(changed):
            if counts[p] > 0:
                heapq.heappush(heap, (-counts[p], p))
    return merges


def _vocab(base: list[str], merges: list[tuple[str, str]], start: int = 0) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for tok in base + [a + b for a, b in merges]:
        if tok not in vocab:
            vocab[tok] = start + len(vocab)
    return vocab


def _check(tok) -> None:
    if len(tok) > MAX_VOCAB:
        raise RuntimeError(f"synthetic tokenizer has {len(tok)} tokens, more than {MAX_VOCAB}")


# ---------------------------------------------------------------------------------- CLIP
# CLIP's pre-tokenizer (words, single digits, punctuation runs), as transformers' CLIPTokenizer
_CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


@functools.lru_cache(maxsize=None)
def _clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    split = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    # BPE with end_of_word_suffix: a word's last symbol carries "</w>"
    words = [tuple(w[:-1]) + (w[-1] + "</w>",) for w, _ in split.pre_tokenize_str(_CORPUS.lower())]
    merges = _learn_merges(words, MAX_VOCAB - 600)
    byte_chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = _vocab(byte_chars + [c + "</w>" for c in byte_chars], merges)
    # the real vocab ends with the two specials too (49406, 49407)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


@functools.lru_cache(maxsize=None)
def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """CLIPTokenizer (byte-level BPE, </w> word ends), model_max_length 77 like the real one.

    pad_token: "<|endoftext|>" (CLIP-L of SD1/FLUX/SD3) or "!" (the OpenCLIP tokenizers of SD2
    and SD3's tokenizer_2).
    """
    # start-up: transformers takes seconds to import; only making this tokenizer needs it
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab()
    tok = CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token=pad_token, model_max_length=77)
    _check(tok)
    return tok


# ------------------------------------------------------------------------------------ T5
@functools.lru_cache(maxsize=None)
def t5_tokenizer():
    """T5TokenizerFast (Unigram, "▁" word starts), model_max_length 512, <pad> 0 and </s> 1."""
    # start-up: transformers takes seconds to import; only making this tokenizer needs it
    from transformers import T5TokenizerFast

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    have = {p for p, _ in pieces}
    for c in _CHARS:
        for p in (c, "▁" + c):
            if c.strip() and p not in have:
                have.add(p)
                pieces.append((p, -10.0))
    for w in _words():
        if "▁" + w not in have:
            have.add("▁" + w)
            # a whole word scores above its characters, so Unigram picks it
            pieces.append(("▁" + w, -5.0))
    # 100 sentinel tokens end the vocabulary, in reverse order, as in T5's
    pieces += [(f"<extra_id_{i}>", 0.0) for i in range(99, -1, -1)]
    tok = T5TokenizerFast(vocab=pieces, extra_ids=100, model_max_length=512)
    _check(tok)
    return tok


# --------------------------------------------------------------------------------- Gemma
@functools.lru_cache(maxsize=None)
def gemma_tokenizer():
    """GemmaTokenizerFast (BPE with byte fallback, "▁" for spaces); adds <bos> like Gemma-2."""
    # start-up: transformers takes seconds to import; only making this tokenizer needs it
    from transformers import GemmaTokenizerFast

    # learn on words that start at "▁" (or at a line start), punctuation apart, as Gemma's
    # vocabulary has them; GemmaTokenizer does not split, and no learned merge crosses "▁"
    text = _CORPUS.replace(" ", "▁")
    words = [tuple(w) for w in re.findall(r"▁?[A-Za-z]+|[^A-Za-z]", text)]
    merges = _learn_merges(words, MAX_VOCAB - 600)
    # Gemma's own special-token ids: pad 0, eos 1, bos 2, unk 3, mask 4; then the byte fallback
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] + [f"<0x{b:02X}>" for b in range(256)]
    vocab = _vocab(specials + ["▁"] + [c for c in _CHARS if c != " "], merges)
    tok = GemmaTokenizerFast(vocab=vocab, merges=merges, add_bos_token=True, model_max_length=8192)
    _check(tok)
    return tok


# ---------------------------------------------------------------------------------- Qwen
# Qwen3's chat template reduced to what text-to-image pipelines use: system/user/assistant
# turns, the generation prompt, and the empty think block when thinking is switched off.
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif -%}"
    "{%- endif -%}"
)


@functools.lru_cache(maxsize=None)
def qwen_tokenizer():
    """Qwen2TokenizerFast (byte-level BPE, "Ġ" for a leading space) with a Qwen3 chat template."""
    # start-up: transformers takes seconds to import; only making this tokenizer needs it
    from tokenizers import AddedToken
    from transformers import Qwen2TokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    split = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    text = normalizers.NFC().normalize_str(_CORPUS)
    words = [tuple(w) for w, _ in split.pre_tokenize_str(text)]
    merges = _learn_merges(words, MAX_VOCAB - 600)
    vocab = _vocab(sorted(pre_tokenizers.ByteLevel.alphabet()), merges)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    for s in specials:
        vocab[s] = len(vocab)
    tok = Qwen2TokenizerFast(vocab=vocab, merges=merges, model_max_length=131072)
    tok.add_special_tokens({"additional_special_tokens": [AddedToken(s, special=True) for s in specials[1:]]})
    tok.chat_template = QWEN3_CHAT_TEMPLATE
    _check(tok)
    return tok
