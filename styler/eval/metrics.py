"""Evaluation metrics: pure functions on embeddings / image tensors that return plain floats.

Embedding metrics take [N, D] tensors (CLIP embeddings from `features.ClipFeatures`):

* clip_t        prompt adherence: 100·max(cos(image, text), 0) per pair (torchmetrics' CLIPScore)
* style_sim     mean cosine over all generated × reference pairs
* fid / kid     Fréchet / kernel distance computed by torchmetrics on *precomputed* feature
                vectors (CLIP embeddings, not Inception activations), in float64
* cmmd          MMD² with a Gaussian RBF kernel on normalised CLIP embeddings (Jayasumana et al.
                2024, "Rethinking FID"), ×1000
* content_sim   cosine per (content, output) pair; ssim on image tensors; style_strength
"""

from __future__ import annotations

import math
import warnings

from ..errors import InputError, UsageError

METRICS = {
    "clip_t": "prompt adherence: 100·max(cos(image, prompt), 0), CLIP score (higher is better)",
    "style_sim": "mean CLIP cosine between generated and reference-style images (higher is better)",
    "fid": "Fréchet distance between generated and reference CLIP embeddings (lower is better); needs more "
           "images per side than the embedding has dimensions (769 for ViT-L/14, 33 for tiny)",
    "kid": "kernel (polynomial MMD) distance on CLIP embeddings, mean over subsets of half the images (lower is "
           "better); needs ≥ 10 images per side",
    "cmmd": "CLIP MMD² with a Gaussian kernel, σ=10, ×1000, the reference (biased) estimator (Jayasumana et al. "
            "2024; lower is better); needs ≥ 2 images per side",
    "content_sim": "CLIP cosine between each content image and its styled output (higher keeps more content)",
    "ssim": "structural similarity between content image and output, pixels in [0, 1] (higher keeps more structure)",
    "style_strength": "(1 − content_sim of output) / (1 − content_sim of plain baseline): >1 moved further from the content",
    "legibility": "share of the prompt's Chinese characters an OCR model (PP-OCR through rapidocr, the `ocr` "
                  "extra) reads in the image (higher is better); on by default when the prompts ask for Chinese text",
}

# Hard minimums per side. fid: a covariance needs n ≥ 2 (n − 1 in the denominator); kid and cmmd:
# the unbiased estimators average over i ≠ j pairs, so each set (or kid subset) needs n ≥ 2.
MIN_SAMPLES = {"fid": 2, "kid": 2, "cmmd": 2}
# Below these the numbers are mostly sampling noise (FID is also strongly biased upwards at small
# n, and its covariance is singular while n ≤ the embedding dimension).
COMFORTABLE_SAMPLES = {"fid": 50, "kid": 50, "cmmd": 50}
# What `styler eval` refuses to store below (per side, before rendering anything): fid needs a
# full-rank covariance (n > D, the embedding dimension); kid needs subsets smaller than the set so
# its spread means something (subsets of n // 2, at least 5 per subset); cmmd is sample-efficient
# (the paper's point) and only needs pairs.
KID_MIN_SUBSET = 5


def eval_minimum(metric: str, dim: int) -> int:
    """The fewest images per side `styler eval` scores `metric` from, for D = `dim` embeddings."""
    return {"fid": dim + 1, "kid": 2 * KID_MIN_SUBSET, "cmmd": 2}.get(metric, 1)


def eval_kid_subset(n: int) -> int:
    """kid's subset size in `styler eval`: half the smaller set (at most 1000), so subsets differ."""
    return max(KID_MIN_SUBSET, min(1000, n // 2))


def parse_metrics(text: str) -> list[str]:
    """"clip_t,fid kid" → ["clip_t", "fid", "kid"]; "all" → every metric. Unknown names are a
    UsageError listing the valid ones; case and '-' vs '_' do not matter; duplicates drop."""
    names = [t.strip().lower().replace("-", "_") for t in str(text or "").replace(",", " ").split()]
    if not names:
        raise UsageError(f"no metrics given; choose from: {', '.join(METRICS)}")
    if "all" in names:
        return list(METRICS)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise UsageError(f"unknown metric(s) {', '.join(unknown)}; valid: {', '.join(METRICS)}")
    return list(dict.fromkeys(names))


def check_samples(metric: str, n_gen: int, n_ref: int) -> None:
    need = MIN_SAMPLES.get(metric, 1)
    if n_gen >= need and n_ref >= need:
        return
    fix = "generate more with --n" if n_gen < need else "use a reference set with more images"
    raise UsageError(f"{metric} needs at least {need} images on each side "
                     f"(have {n_gen} generated, {n_ref} reference); {fix}")


def small_sample_warning(metric: str, n: int, dim: int | None = None) -> str | None:
    """A one-line caution when `n` images per side is too few for `metric` to be trusted, else None."""
    comfortable = COMFORTABLE_SAMPLES.get(metric)
    if comfortable is None or n >= comfortable:
        return None
    text = (f"{metric} from only {n} images per side is {'noisy and biased' if metric == 'fid' else 'noisy'}; "
            f"compare runs with the same n, and prefer ≥ {comfortable}")
    if metric == "fid" and dim and n <= dim:
        text += f"; with {n} ≤ {dim} embedding dimensions the covariance is singular"
    return text


def mean(values) -> float:
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean of no values")
    return math.fsum(values) / len(values)


# ---------------------------------------------------------------- embedding metrics


def _as2d(x, name: str):
    import torch

    x = torch.as_tensor(x)
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2:
        raise UsageError(f"{name} must be [N, D] embeddings, got shape {tuple(x.shape)}")
    bad = int((~torch.isfinite(x)).any(dim=-1).sum())
    if bad:
        raise InputError(f"{name}: CLIP features contain NaN for {bad} image(s) of {x.shape[0]}; "
                         "the model or the images are broken")
    return x.double()


def _cosine_pairs(a, b, what: str) -> list[float]:
    import torch

    a, b = _as2d(a, what), _as2d(b, what)
    if a.shape != b.shape:
        raise UsageError(f"{what}: need one pair per row, got {tuple(a.shape)} and {tuple(b.shape)}")
    return torch.nn.functional.cosine_similarity(a, b, dim=-1).tolist()


def clip_t(image_emb, text_emb) -> list[float]:
    """CLIP score per (image, text) pair: 100·max(cos, 0), in [0, 100]."""
    return [100.0 * max(c, 0.0) for c in _cosine_pairs(image_emb, text_emb, "clip_t")]


def content_sim(content_emb, out_emb) -> list[float]:
    """Cosine per (content image, styled output) pair, in [-1, 1]."""
    return _cosine_pairs(content_emb, out_emb, "content_sim")


def style_sim(gen_emb, ref_emb) -> float:
    """Mean cosine over all generated × reference pairs."""
    import torch

    g = torch.nn.functional.normalize(_as2d(gen_emb, "style_sim"), dim=-1)
    r = torch.nn.functional.normalize(_as2d(ref_emb, "style_sim"), dim=-1)
    if g.shape[0] == 0 or r.shape[0] == 0:
        raise UsageError("style_sim needs at least one image on each side")
    return float((g @ r.T).mean())


def _feature_module(dim: int):
    """An identity "feature extractor" for torchmetrics: update() is given feature vectors
    [N, D] instead of images. torchmetrics reads `num_features` (so it never runs a dummy image
    through it) and accumulates whatever dtype the module returns; we return float64."""
    import torch

    class PrecomputedFeatures(torch.nn.Module):
        def __init__(self, num_features: int):
            super().__init__()
            self.num_features = num_features

        def forward(self, x):
            return x.to(torch.float64)

    return PrecomputedFeatures(dim)


def _pair(a, b, metric: str):
    a, b = _as2d(a, metric), _as2d(b, metric)
    if a.shape[1] != b.shape[1]:
        raise UsageError(f"{metric}: embeddings of different sizes ({a.shape[1]} vs {b.shape[1]}); "
                         "were they made by the same CLIP model?")
    check_samples(metric, a.shape[0], b.shape[0])
    return a, b


def fid(a, b) -> float:
    """Fréchet distance between the Gaussians fitted to feature sets `a` (generated) and `b`
    (reference): ‖μa − μb‖² + Tr(Σa + Σb − 2(ΣaΣb)^½). Computed by torchmetrics'
    FrechetInceptionDistance fed the precomputed features in float64; tiny negative results
    from round-off are clamped to 0."""
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance

    a, b = _pair(a, b, "fid")
    metric = FrechetInceptionDistance(feature=_feature_module(a.shape[1]), normalize=True)
    metric.update(a, real=False)
    metric.update(b, real=True)
    with torch.no_grad():
        value = float(metric.compute())
    return max(value, 0.0)


def kid(a, b, subset_size: int | None = None, subsets: int = 100, seed: int = 0) -> tuple[float, float]:
    """Kernel distance (unbiased MMD² with the cubic polynomial kernel (x·y/D + 1)³) via
    torchmetrics' KernelInceptionDistance on precomputed features, as (mean, std) over `subsets`
    random subsets of `subset_size` per side (default: the smaller set, at most 1000). The
    subsets are drawn from a fixed seed, so equal inputs give equal results. With the default
    subset size below 1000 each subset is a whole set, so the mean is the full-sample estimate and
    the std is 0 (it says nothing then); pass a smaller subset_size for a spread. Like cmmd's
    unbiased estimator, kid(A, A) is slightly negative rather than 0."""
    import torch
    from torchmetrics.image.kid import KernelInceptionDistance

    a, b = _pair(a, b, "kid")
    largest = min(a.shape[0], b.shape[0])
    size = min(largest, 1000) if subset_size is None else int(subset_size)
    if not 2 <= size <= largest:
        raise UsageError(f"kid subset size must be between 2 and {largest} (the smaller set), got {size}")
    with warnings.catch_warnings():  # its note about keeping all features in memory: ours are small
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=_feature_module(a.shape[1]), subsets=subsets, subset_size=size,
                                         normalize=True)
    metric.update(a, real=False)
    metric.update(b, real=True)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        m, s = metric.compute()
    return float(m), float(s)


def cmmd(a, b, sigma: float = 10.0, scale: float = 1000.0, unbiased: bool = False) -> float:
    """CMMD (Jayasumana et al. 2024): squared MMD between CLIP embedding sets with the Gaussian
    RBF kernel k(x, y) = exp(−‖x − y‖² / (2σ²)), σ = 10, times `scale` = 1000. Rows are
    L2-normalised first (the paper uses normalised CLIP embeddings; σ = 10 assumes them).

    The default (unbiased=False) is what the authors' reference code computes, so numbers compare
    with published ones: the within-set means keep the diagonal, and X against itself is exactly 0.
    unbiased=True averages within-set pairs over i ≠ j only; it can dip slightly below 0 when the
    sets match (for a set against itself it is −2(1 − mean off-diagonal k)/n)."""
    import torch

    a, b = _pair(a, b, "cmmd")
    x = torch.nn.functional.normalize(a, dim=-1)
    y = torch.nn.functional.normalize(b, dim=-1)
    gamma = 1.0 / (2.0 * sigma * sigma)

    def k(p, q):
        d2 = (p * p).sum(1, keepdim=True) + (q * q).sum(1)[None, :] - 2.0 * p @ q.T
        return torch.exp(-gamma * d2.clamp_min(0.0))

    def within(p):
        kp, n = k(p, p), p.shape[0]
        if not unbiased:
            return kp.mean()
        return (kp.sum() - kp.diagonal().sum()) / (n * (n - 1))

    value = within(x) + within(y) - 2.0 * k(x, y).mean()
    return float(scale * value)


# ---------------------------------------------------------------- image metrics


def _image_tensor(image, name: str):
    """PIL image, path, HWC uint8 array or [C, H, W] / [N, C, H, W] float tensor in [0, 1] →
    float64 [N, C, H, W]."""
    import numpy as np
    import torch

    if isinstance(image, torch.Tensor):
        t = image.detach().to(torch.float64)
    else:
        if not isinstance(image, np.ndarray):
            from .features import _open_image

            image = np.asarray(_open_image(image).convert("RGB"))
        arr = np.asarray(image)
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float64) / 255.0
        if arr.ndim == 2:
            arr = arr[:, :, None]
        t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).to(torch.float64)
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4:
        raise UsageError(f"{name} must be an image or a [C, H, W] / [N, C, H, W] tensor, got {tuple(t.shape)}")
    return t


def ssim(img_a, img_b) -> float:
    """Structural similarity (torchmetrics, Gaussian window, data_range=1.0) between two images
    with pixel values in [0, 1]. When `img_b` has a different size it is resized to `img_a`'s with
    antialiased bicubic interpolation (and clamped to [0, 1]) first: a is the reference frame."""
    import torch
    from torchmetrics.image import StructuralSimilarityIndexMeasure

    a, b = _image_tensor(img_a, "ssim image a"), _image_tensor(img_b, "ssim image b")
    if a.shape[1] != b.shape[1]:
        raise UsageError(f"ssim: images have {a.shape[1]} and {b.shape[1]} channels")
    if a.shape[-2:] != b.shape[-2:]:
        b = torch.nn.functional.interpolate(b, size=tuple(a.shape[-2:]), mode="bicubic", align_corners=False,
                                            antialias=True).clamp(0.0, 1.0)
    if a.shape[0] != b.shape[0]:
        raise UsageError(f"ssim: {a.shape[0]} and {b.shape[0]} images; give one pair or equal batches")
    if min(a.shape[-2:]) < 11:
        raise UsageError(f"ssim needs images at least 11 pixels on a side, got {tuple(a.shape[-2:])}")
    metric = StructuralSimilarityIndexMeasure(data_range=1.0)
    with torch.no_grad():
        return float(metric(b.float(), a.float()))


def style_strength(out_content_sim: float, baseline_content_sim: float, eps: float = 1e-6) -> float:
    """How much further from the content image the styled output moved than the plain baseline:
    (1 − out_content_sim) / (1 − baseline_content_sim), with content_sim a CLIP cosine. 1 = as far
    as the baseline (no extra style), > 1 = further, < 1 = closer. When the baseline did not move
    (1 − baseline < eps) the ratio is undefined and NaN is returned."""
    denom = 1.0 - float(baseline_content_sim)
    if abs(denom) < eps:
        return float("nan")
    return (1.0 - float(out_content_sim)) / denom
