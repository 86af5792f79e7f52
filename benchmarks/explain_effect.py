"""`styler explain` on the tiny base: does the "circle" map sit on the drawn circle more than the
"background" map does, and what does recording cost?

For "a red circle on a blue background" at each seed and step count it renders once with the
cross-attention recorder (styler.generate.explain), finds the drawn circle by colour (nearer the
world's red than its blue), and prints the share of each word's raw map inside it, their ratio
(circle / background), the share of attention the words, the start token and the end/padding
tokens get, and the render time with and without the recorder.

    python benchmarks/explain_effect.py [--seeds 12] [--steps 3,5,10,20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=12)
    ap.add_argument("--steps", default="3,5,10,20")
    args = ap.parse_args()
    os.environ.setdefault("STYLER_HOME", tempfile.mkdtemp(prefix="styler-explain-"))

    import numpy as np

    from styler.data.synth.world import COLOURS
    from styler.generate.engine import Session
    from styler.generate.explain import CrossAttentionRecorder, word_positions

    prompt = "a red circle on a blue background"
    session = Session.open("tiny")
    session.set_scheduler("ddim")
    pipe = session.pipe
    words = prompt.split()
    n_words = len(words)
    every = [[i] for i in range(pipe.tokenizer.model_max_length)]  # every position: words, start, end, padding
    circle, background = word_positions(pipe, prompt, "circle")[0], word_positions(pipe, prompt, "background")[0]
    red, blue = np.array(COLOURS["red"]), np.array(COLOURS["blue"])
    print(f"prompt {prompt!r}: circle is token {circle}, background token {background}")
    for steps in [int(s) for s in args.steps.split(",")]:
        ratios, shares, t_plain, t_rec = [], [], [], []
        for seed in range(args.seeds):
            kw = dict(prompt=prompt, negative="", seed=seed, steps=steps, guidance=7.5, width=64, height=64)
            t0 = time.perf_counter()
            plain = session.render(**kw)
            t_plain.append(time.perf_counter() - t0)
            rec = CrossAttentionRecorder(every, (8, 8))
            t0 = time.perf_counter()
            with rec.installed(pipe.unet):
                image = session.render(**kw)
            t_rec.append(time.perf_counter() - t0)
            assert np.array_equal(np.asarray(plain), np.asarray(image)), "the recorder changed the image"
            maps = rec.maps((64, 64))  # (77, 64, 64) raw, mean attention per position
            img = np.asarray(image, dtype=np.float32) / 255
            inside = ((img - red) ** 2).sum(-1) < ((img - blue) ** 2).sum(-1)

            def share(m):
                return float((m * inside).sum() / m.sum())

            ratios.append(share(maps[circle]) / share(maps[background]))
            per_pixel = maps.mean((1, 2))
            shares.append((per_pixel[1:1 + n_words].mean(), per_pixel[0], per_pixel[1 + n_words:].sum()))
        word, start, rest = (statistics.mean(s[i] for s in shares) for i in range(3))
        print(f"steps {steps:>2}: circle/background share inside the circle: median {statistics.median(ratios):.3f} "
              f"(min {min(ratios):.3f}, max {max(ratios):.3f}, > 1 in {sum(r > 1 for r in ratios)}/{len(ratios)}); "
              f"attention per word {word:.1%}, start token {start:.1%}, end+padding {rest:.1%}; "
              f"render {statistics.median(t_plain) * 1000:.0f} ms, with the recorder "
              f"{statistics.median(t_rec) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
