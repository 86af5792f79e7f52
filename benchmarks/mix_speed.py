"""Time per image on the tiny base, same prompt/seed/steps, for: no adapter; diffusers
`set_adapters` with 3 LoRAs (unfused peft layers); styler's mix of the same 3 (folded once per
mix, the fold counted in). Prints both ratios to no-adapter. Goal for styler: ≤ 1.05.

    python benchmarks/mix_speed.py [--images 8] [--steps 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def make_adapters(base, folder: Path) -> list[Path]:
    """Three LoRAs of different ranks and targets, with random (non-zero) weights."""
    import torch

    from styler.models.load import load_pipeline
    from styler.train.config import build_config
    from styler.train.methods import make_method

    paths = []
    for i, (rank, targets, te) in enumerate([(4, "attn", False), (8, "attn+conv", False), (16, "attn", True)]):
        pipe = load_pipeline(base)
        method = make_method(build_config(dataset="x", rank=rank, alpha=rank / 2, targets=targets, text_encoder=te))
        torch.manual_seed(i)
        method.prepare(pipe)
        with torch.no_grad():
            for name, p in method.trainable().items():
                if "lora_B" in name:
                    p.normal_(0, 0.02)
        paths.append(method.save(folder / f"a{i}.safetensors", {}))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import os

    os.environ.setdefault("STYLER_HOME", tempfile.mkdtemp(prefix="styler-bench-"))
    import torch

    from styler.adapters.formats import model_module_names, read_adapter
    from styler.adapters.mixing import MixEntry, WeightMixer
    from styler.models.load import load_pipeline
    from styler.models.resolve import resolve_base

    base = resolve_base("tiny")
    folder = Path(tempfile.mkdtemp())
    paths = make_adapters(base, folder)
    weights = [0.5, 0.3, 0.4]

    plain = load_pipeline(base)
    peft_pipe = load_pipeline(base)
    for i, p in enumerate(paths):
        peft_pipe.load_lora_weights(str(p), adapter_name=f"a{i}")
    peft_pipe.set_adapters([f"a{i}" for i in range(3)], adapter_weights=weights)
    styler_pipe = load_pipeline(base)
    names = model_module_names(styler_pipe)
    data = [read_adapter(p, module_names=names) for p in paths]
    mixer = WeightMixer(styler_pipe)

    def render(pipe, n):
        for k in range(n):
            g = torch.Generator().manual_seed(k)
            pipe("a cat in watercolor", num_inference_steps=args.steps, height=64, width=64, generator=g)

    def none_():
        render(plain, args.images)

    def peft_():
        render(peft_pipe, args.images)

    def styler_():
        mixer.apply([MixEntry(f"a{i}", d, w) for i, (d, w) in enumerate(zip(data, weights))])  # once per mix
        render(styler_pipe, args.images)
        mixer.restore()

    for fn in (none_, peft_, styler_):
        fn()  # warm up
    times = {"none": [], "peft": [], "styler": []}
    for _ in range(args.repeats):  # interleaved so drift hits all three
        for key, fn in (("none", none_), ("peft", peft_), ("styler", styler_)):
            t = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - t) / args.images)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"tiny base, 64px, {args.steps} steps, {args.images} images per mix, median of {args.repeats}, "
          f"{torch.get_num_threads()} threads")
    print(f"no adapter                         {med['none'] * 1e3:8.1f} ms/image")
    print(f"diffusers set_adapters (3, unfused) {med['peft'] * 1e3:8.1f} ms/image   ratio {med['peft'] / med['none']:.3f}")
    print(f"styler mix (3, folded once)         {med['styler'] * 1e3:8.1f} ms/image   ratio {med['styler'] / med['none']:.3f}   (goal <= 1.05)")


if __name__ == "__main__":
    main()
