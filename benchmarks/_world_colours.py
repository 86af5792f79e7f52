"""Which of the world's colours does the tiny CLIP see in an image? Shared by tiny_world.py and
world_diag.py: one text embedding per colour for the shape ("a red circle", averaged over the
shapes) and one for the background ("on a red background")."""
from __future__ import annotations


def colour_texts(model, tok):
    """(shape colours, background colours): two unit-norm [8, d] tensors, in world.COLOUR_NAMES order."""
    import torch
    import torch.nn.functional as F

    from styler.data.synth import world
    from styler.models.pretrain import text_embeds

    def texts(prompts):
        with torch.no_grad():
            t = tok(prompts, padding=True, return_tensors="pt")
            return F.normalize(text_embeds(model, t.input_ids, t.attention_mask), dim=-1)

    shape = torch.stack([F.normalize(texts([f"{world._article(c)} {c} {sh}" for sh in world.SHAPES]).mean(0), dim=0)
                         for c in world.COLOUR_NAMES])
    background = texts([f"on {world._article(c)} {c} background" for c in world.COLOUR_NAMES])
    return shape, background


def prompted_colours(image_emb, scenes, shape, background) -> tuple[float, float]:
    """The shares of images whose shape colour and background colour the CLIP picks as their scene's."""
    import numpy as np
    import torch.nn.functional as F

    from styler.data.synth import world

    e = F.normalize(image_emb.float(), dim=-1)
    fg = np.mean([world.COLOUR_NAMES[k] == sc.colour for k, sc in zip((e @ shape.T).argmax(1).tolist(), scenes)])
    bg = np.mean([world.COLOUR_NAMES[k] == sc.background for k, sc in zip((e @ background.T).argmax(1).tolist(), scenes)])
    return float(fg), float(bg)
