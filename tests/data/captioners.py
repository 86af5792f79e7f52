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


def build_tiny_florence2(dest: Path, word: str = "fox") -> Path:
    """A random Florence-2 in transformers' own format (Florence2ForConditionalGeneration), whose
    last decoder norm and output head are set so that every token it says is `word`."""
    import torch
    from transformers import (BartTokenizer, CLIPImageProcessor, Florence2Config, Florence2ForConditionalGeneration,
                              Florence2Processor)

    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "Ġa", "Ġfox", "Ġink", "Ġcat", "What",
                                          "Ġdoes", "Ġthe", "Ġimage", "Ġdescribe", "?"])}
    tok = BartTokenizer(vocab=vocab, merges=[], extra_special_tokens={"image_token": "<image>"})
    vision = dict(depths=[1, 1], patch_size=[7, 3], patch_stride=[4, 2], patch_padding=[3, 1],
                  patch_prenorm=[False, True], embed_dim=[16, 32], num_heads=[2, 2], num_groups=[2, 2], window_size=2,
                  projection_dim=32, max_position_embeddings=8)
    text = dict(vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64,
                bos_token_id=0, eos_token_id=2, pad_token_id=1, decoder_start_token_id=2)
    torch.manual_seed(0)
    model = Florence2ForConditionalGeneration(Florence2Config(vision_config=vision, text_config=text,
                                                              image_token_id=tok.image_token_id)).eval()
    with torch.no_grad():
        norm = model.model.language_model.decoder.layers[-1].final_layer_norm
        norm.weight.zero_()
        norm.bias.fill_(1.0)
        model.lm_head.weight.zero_()
        model.lm_head.weight[vocab["Ġ" + word]] = 1.0
    model.save_pretrained(dest, safe_serialization=True)
    images = CLIPImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False)
    images.image_seq_length = 17  # 4x4 patches of a 32 px image, and one more the encoder adds
    Florence2Processor(image_processor=images, tokenizer=tok).save_pretrained(dest)
    return dest
