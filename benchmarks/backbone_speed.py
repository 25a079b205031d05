"""Inference time per image of CNN and transformer backbones, for docs/howto/choose_backbone.rst.

Random weights (nothing is downloaded): the time depends on the architecture, not the weights.
The keras-hub transformers are built from their constructors with the published sizes of the
presets named in the output. Run: python benchmarks/backbone_speed.py [--size 112] [--batch 8]
[--models resnet50,swin]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import keras_hub
import numpy as np


def applications(name: str, size: int) -> keras.Model:
    constructor = getattr(keras.applications, name)
    return constructor(include_top=False, weights=None, input_shape=(size, size, 3))


def vit(size: int, patch: int, layers: int, heads: int, dim: int, mlp: int) -> keras.Model:
    return keras_hub.models.ViTBackbone(
        image_shape=(size, size, 3), patch_size=patch, num_layers=layers, num_heads=heads,
        hidden_dim=dim, mlp_dim=mlp,
    )  # fmt: skip


def dinov2(size: int, layers: int, heads: int, dim: int) -> keras.Model:
    return keras_hub.models.DINOV2Backbone(
        patch_size=14, num_layers=layers, hidden_dim=dim, num_heads=heads,
        intermediate_dim=4 * dim, image_shape=(size, size, 3),
        position_embedding_shape=(518, 518),
    )  # fmt: skip


def siglip_vision(size: int) -> keras.Model:
    return keras_hub.models.SigLIPVisionEncoder(
        patch_size=16, hidden_dim=768, num_layers=12, num_heads=12, intermediate_dim=3072,
        image_shape=(size, size, 3),
    )  # fmt: skip


def swin_tiny(size: int) -> keras.Model:
    # 27,519,354 parameters: exactly keras-hub's metadata of swin_tiny_patch4_window7_224.
    # At 112 px its last stage (3x3) is below its 7x7 window, which keras-hub cannot run.
    return keras_hub.models.SwinTransformerBackbone(
        image_shape=(size, size, 3), embed_dim=96, depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24), window_size=7,
    )  # fmt: skip


def mit_b0(size: int) -> keras.Model:
    # SegFormer's MiT-B0: 3,319,392 parameters; keras-hub's metadata of mit_b0 says 3,321,962.
    return keras_hub.models.MiTBackbone(
        layerwise_depths=[2, 2, 2, 2], num_layers=4, layerwise_num_heads=[1, 2, 5, 8],
        layerwise_sr_ratios=[8, 4, 2, 1], max_drop_path_rate=0.1,
        layerwise_patch_sizes=[7, 3, 3, 3], layerwise_strides=[4, 2, 2, 2],
        image_shape=(size, size, 3), hidden_dims=[32, 64, 160, 256],
    )  # fmt: skip


MODELS = {
    "mobilenet_v2": lambda s: applications("MobileNetV2", s),
    "efficientnet_b0": lambda s: applications("EfficientNetB0", s),
    "resnet50": lambda s: applications("ResNet50", s),
    "convnext_tiny": lambda s: applications("ConvNeXtTiny", s),
    "keras_hub:dinov2_small (ViT-S/14)": lambda s: dinov2(s, 12, 6, 384),
    "keras_hub:dinov2_base (ViT-B/14)": lambda s: dinov2(s, 12, 12, 768),
    "keras_hub:vit_base_patch16_224_imagenet (ViT-B/16)": lambda s: vit(s, 16, 12, 12, 768, 3072),
    "keras_hub:siglip_base_patch16_224 (vision tower)": siglip_vision,
    "keras_hub:mit_b0_ade20k_512 (MiT-B0)": mit_b0,
    "keras_hub:swin_tiny_patch4_window7_224 (Swin-T)": swin_tiny,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="", help="comma-separated parts of names to run")
    args = parser.parse_args()
    wanted = [part for part in args.models.split(",") if part]
    images = np.random.default_rng(0).uniform(-1, 1, (args.batch, args.size, args.size, 3))
    images = images.astype("float32")
    print(f"{keras.backend.backend()} backend, {os.cpu_count()} CPUs, size {args.size}")
    for name, build in MODELS.items():
        if wanted and not any(part in name for part in wanted):
            continue
        model = build(args.size)
        model.predict_on_batch(images)  # trace and warm up
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            model.predict_on_batch(images)
            best = min(best, time.perf_counter() - start)
        params = model.count_params()
        print(f"{name:<55} {params / 1e6:7.1f} M  {1000 * best / args.batch:8.1f} ms/image")


if __name__ == "__main__":
    main()
