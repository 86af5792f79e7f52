"""Tiny random BLIP and GIT captioning models, built from their configs and saved with
save_pretrained (safetensors), with a processor around a BertTokenizer whose vocabulary is written
here. The decoder's output bias is pushed towards one word, so the model's caption is known:
that word, once per generated token."""

from __future__ import annotations

from pathlib import Path

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "fox", "ink", "cat", "red", "painting", "of", "[DEC]"]
IDS = {w: i for i, w in enumerate(WORDS)}
TINY = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2)
VISION = dict(TINY, image_size=32, patch_size=8)


def _tokenizer():
    from transformers import BertTokenizer

    tok = BertTokenizer(vocab=dict(IDS))
    tok.add_special_tokens({"bos_token": "[DEC]"})  # BLIP's decoder starts from [DEC], as the real one does
    return tok


def build_tiny_blip(dest: Path, word: str = "ink") -> Path:
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    torch.manual_seed(0)
    text = dict(TINY, vocab_size=len(WORDS), max_position_embeddings=64, bos_token_id=IDS["[DEC]"],
                eos_token_id=IDS["[SEP]"], sep_token_id=IDS["[SEP]"], pad_token_id=IDS["[PAD]"])
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=VISION, projection_dim=32)).eval()
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[IDS[word]] += 100.0
    model.save_pretrained(dest, safe_serialization=True)
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), _tokenizer()).save_pretrained(dest)
    return dest


def build_tiny_git(dest: Path, word: str = "cat") -> Path:
    import torch
    from transformers import CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    torch.manual_seed(0)
    config = GitConfig(vocab_size=len(WORDS), max_position_embeddings=64, bos_token_id=IDS["[CLS]"],
                       eos_token_id=IDS["[SEP]"], pad_token_id=IDS["[PAD]"], vision_config=VISION, **TINY)
    model = GitForCausalLM(config).eval()
    with torch.no_grad():
        model.output.bias[IDS[word]] += 100.0
    model.save_pretrained(dest, safe_serialization=True)
    GitProcessor(CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                 _tokenizer()).save_pretrained(dest)
    return dest
