"""Tokenizers made here, for a checkpoint without any hub (checkpoint.py): a byte-level BPE for
CLIP and a sentencepiece unigram model for T5, trained on a made-up corpus. Their token ids are
valid for the encoders but mean nothing."""

from __future__ import annotations

import io
import json
import random
import re
from collections import Counter
from pathlib import Path

CLIP_BPE_MERGES = 400
T5_SPM_VOCAB = 1000


class CheckpointError(RuntimeError):
    """The checkpoint cannot be written as asked."""


def made_up_corpus(seed: int, sentences: int = 500) -> list[str]:
    """Sentences of invented words: enough variety for a ~1000-piece vocabulary."""
    rng = random.Random(seed)
    onsets = "b c d f g h j k l m n p r s t v w z br dr st th sh ch kr pl".split()
    vowels = "a e i o u ai ou ea".split()

    def word() -> str:
        return "".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(rng.randint(1, 3))) + \
            rng.choice(["", "", "n", "s", "r", "l"])

    words = [word() for _ in range(1500)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(6, 16))).capitalize() + "."
            for _ in range(sentences)]


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP's printable stand-in for each byte: byte-level BPE works on these characters.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def clip_bpe(corpus: list[str], merges: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE in CLIP's layout: bytes, bytes + '</w>', merges, then the two specials."""
    byte_chars = _bytes_to_unicode()
    words = Counter()
    for sentence in corpus:
        for w in re.findall(r"[a-z]+|[^\sa-z]", sentence.lower()):
            chars = [byte_chars[b] for b in w.encode()]
            words[tuple(chars[:-1]) + (chars[-1] + "</w>",)] += 1
    learned: list[tuple[str, str]] = []
    for _ in range(merges):
        pairs = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))  # ties broken by the pair: deterministic
        learned.append(best)
        merged = Counter()
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    base = list(byte_chars.values())
    tokens = base + [c + "</w>" for c in base] + [a + b for a, b in learned] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}, learned


def write_clip_tokenizer(folder: Path, corpus: list[str]):
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_bpe(corpus, CLIP_BPE_MERGES)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    # Loaded from the files just written, as from a real checkpoint; saving adds tokenizer.json.
    tokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=77)
    tokenizer.save_pretrained(folder)
    return tokenizer


def write_t5_tokenizer(folder: Path, corpus: list[str]):
    try:
        import sentencepiece as spm
    except ImportError as error:
        raise CheckpointError(
            "the T5 tokenizer is trained with sentencepiece, which is not installed: "
            "python3 -m pip install sentencepiece"
        ) from error
    from transformers import T5TokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    proto = io.BytesIO()
    # T5's special ids (pad 0, eos 1, unk 2, no bos); identity normalisation so the tokenizers
    # backend (which gets no normaliser below) splits exactly as sentencepiece does.
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=proto, vocab_size=T5_SPM_VOCAB, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, character_coverage=1.0,
        normalization_rule_name="identity", num_threads=1, minloglevel=2,
    )
    processor = spm.SentencePieceProcessor(model_proto=proto.getvalue())
    pieces = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    # Built from the pieces, not from the .model file: converting a .model needs protobuf.
    try:
        tokenizer = T5TokenizerFast(vocab=pieces)
    except TypeError as error:  # transformers 4.x has no `vocab=`
        raise CheckpointError(f"building the T5 tokenizer needs transformers>=5: {error}") from error
    tokenizer.model_max_length = 512
    tokenizer.save_pretrained(folder)
    return tokenizer
