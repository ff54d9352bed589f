"""Tokenizers built in code (no downloads), with the classes the real pipelines use.

Each is a small vocabulary: every single character or byte, plus whole-word tokens for a
word list (common English, and the words of the instruction texts the SANA and Lumina2
pipelines put before the prompt), so a prompt tokenizes to roughly as many tokens as with
the real tokenizer. That matters where the token count sets the compute: Z-Image keeps only
the unpadded tokens, Kandinsky3 cuts the context to the longest prompt, SANA sizes its Gemma
input from the instruction's token count. Elsewhere the pipelines pad to a fixed length.

All ids stay below MAX_VOCAB, under the vocab_size of every text encoder (tiny ones too).
"""
from __future__ import annotations

import functools
import inspect
import json
import re

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

MAX_VOCAB = 4096

# Common English words (prompt-like text); the instruction texts of the pipelines are added at
# build time so their token counts come out close to the real ones.
_BASE_TEXT = """
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
studio camera lens shot wide angle 4k 8k hdr masterpiece best ultra highly intricate elegant
"""


def _instruction_texts() -> list[str]:
    """Texts the SANA and Lumina2 pipelines put before every prompt (their default arguments)."""
    texts: list[str] = []
    try:
        from diffusers import Lumina2Pipeline, SanaPipeline

        chi = inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default
        if chi:
            texts.append("\n".join(chi))
        # Lumina2 sets its system prompt in __init__; read it from the source text
        src = inspect.getsource(Lumina2Pipeline.__init__)
        m = re.search(r'self\.system_prompt\s*=\s*"([^"]*)"', src)
        if m:
            texts.append(m.group(1) + " <Prompt Start> ")
    except Exception:  # the word list is only a fidelity aid; never fail a build for it
        pass
    return texts


@functools.lru_cache(maxsize=1)
def _words() -> tuple[str, ...]:
    words: dict[str, None] = {}
    for text in [_BASE_TEXT, *_instruction_texts()]:
        for w in re.findall(r"[A-Za-z]+", text):
            words[w] = None
            words[w.lower()] = None
    return tuple(words)


_CHARS = [chr(c) for c in range(32, 127)] + ["\n", "\t"]


def _corpus() -> list[str]:
    # each word once, plus the instruction texts (so their frequent words merge first)
    return [" ".join(_words()), *_instruction_texts()]


def _train_bpe(tokenizer, alphabet: list[str], **trainer_kwargs) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn BPE merges on the in-code corpus until every word is one token; returns (vocab, merges).

    The tokenizers trainer breaks ties by pair id, so the result is the same in every process.
    """
    trainer = trainers.BpeTrainer(
        vocab_size=MAX_VOCAB - 512,  # room for the specials and sentinels added afterwards
        min_frequency=1,
        show_progress=False,
        initial_alphabet=alphabet,
        **trainer_kwargs,
    )
    tokenizer.train_from_iterator(_corpus(), trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


def _check(tok) -> None:
    if len(tok) > MAX_VOCAB:
        raise RuntimeError(f"synthetic tokenizer has {len(tok)} tokens, more than {MAX_VOCAB}")


# ---------------------------------------------------------------------------------- CLIP
@functools.lru_cache(maxsize=None)
def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """CLIPTokenizer, byte-level BPE with </w> word ends, padded to 77 like the real one.

    pad_token: "<|endoftext|>" (CLIP-L of SD1/FLUX/SD3) or "!" (OpenCLIP tokenizers of SD2 and
    SD3's tokenizer_2).
    """
    from transformers import CLIPTokenizer

    byte_chars = pre_tokenizers.ByteLevel.alphabet()  # the 256 byte-level symbols
    vocab: dict[str, int] = {}
    for c in sorted(byte_chars):
        vocab[c] = len(vocab)
    for c in sorted(byte_chars):
        vocab[c + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []
    seen: set = set()
    for w in _words():
        w = w.lower()
        if len(w) > 1:
            _chain(vocab, merges, seen, list(w[:-1]) + [w[-1] + "</w>"])
    # the real vocab also ends with the two specials (49406, 49407)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tok = CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        pad_token=pad_token,
        model_max_length=77,
    )
    _check(tok)
    return tok


# ------------------------------------------------------------------------------------ T5
@functools.lru_cache(maxsize=None)
def t5_tokenizer():
    """T5TokenizerFast (Unigram, sentencepiece-style "▁" word starts), model_max_length 512."""
    from transformers import T5TokenizerFast

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    have = {p for p, _ in pieces}
    for c in _CHARS:
        for p in (c, "▁" + c):
            if p not in have and c.strip():
                have.add(p)
                pieces.append((p, -10.0))
    for w in _words():
        p = "▁" + w
        if p not in have:
            have.add(p)
            # a whole word scores better than its characters, so Unigram picks it
            pieces.append((p, -5.0 - 0.01 * len(pieces) / 1000))
    # T5 keeps 100 sentinel tokens at the end of its vocabulary, in reverse order
    for i in range(99, -1, -1):
        pieces.append((f"<extra_id_{i}>", 0.0))
    tok = T5TokenizerFast(vocab=pieces, extra_ids=100, model_max_length=512)
    _check(tok)
    return tok


# --------------------------------------------------------------------------------- Gemma
@functools.lru_cache(maxsize=None)
def gemma_tokenizer():
    """GemmaTokenizerFast (BPE with byte fallback, "▁" for spaces), adds <bos> like Gemma-2."""
    from transformers import GemmaTokenizerFast

    # Gemma's own special-token ids: pad 0, eos 1, bos 2, unk 3, mask 4
    vocab: dict[str, int] = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for c in ["▁"] + [c for c in _CHARS if c != " "]:
        vocab.setdefault(c, len(vocab))
    merges: list[tuple[str, str]] = []
    seen: set = set()
    for w in _words():
        _chain(vocab, merges, seen, ["▁"] + list(w))
        if len(w) > 1:
            _chain(vocab, merges, seen, list(w))  # a word at the start of the text has no "▁"
    tok = GemmaTokenizerFast(vocab=vocab, merges=merges, model_max_length=8192)
    _check(tok)
    return tok


# ---------------------------------------------------------------------------------- Qwen
# Qwen3's chat template, reduced to what text-to-image pipelines use (system/user/assistant
# turns, the generation prompt, and the empty think block when thinking is switched off).
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
    from tokenizers import AddedToken
    from transformers import Qwen2TokenizerFast

    vocab: dict[str, int] = {}
    for c in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[c] = len(vocab)
    merges: list[tuple[str, str]] = []
    seen: set = set()
    for w in _words():
        _chain(vocab, merges, seen, ["Ġ"] + list(w))
        if len(w) > 1:
            _chain(vocab, merges, seen, list(w))
    # newline pairs are single tokens in Qwen too (the chat template is full of them)
    _chain(vocab, merges, seen, ["Ċ", "Ċ"])
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    for s in specials:
        vocab[s] = len(vocab)
    tok = Qwen2TokenizerFast(
        vocab=vocab,
        merges=merges,
        model_max_length=131072,
    )
    tok.add_special_tokens(
        {"additional_special_tokens": [AddedToken(s, special=True) for s in specials[1:]]}
    )
    tok.chat_template = QWEN3_CHAT_TEMPLATE
    _check(tok)
    return tok
