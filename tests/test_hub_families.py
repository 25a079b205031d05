"""The keras-hub families beyond ViT and ResNet, Grad-CAM, fit() and discriminative rates on them.

As in ``test_hub.py``, each family is a tiny real keras-hub network built from its
constructor, saved with keras-hub's ``save_to_preset`` (with its image converter) into a
temporary folder and loaded through transferkit by that path. One network per family per
module, built on first use.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

import transferkit as tk
from transferkit import discriminative

SIZE = 32


def images(count: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, SIZE, SIZE, 3)).astype("float32")


def _vit() -> keras.Model:
    return keras_hub.models.ViTBackbone(
        image_shape=(SIZE, SIZE, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
        mlp_dim=32,
    )  # fmt: skip


def _swin() -> keras.Model:
    return keras_hub.models.SwinTransformerBackbone(
        image_shape=(SIZE, SIZE, 3), embed_dim=8, depths=(1, 1), num_heads=(1, 2),
        window_size=4, patch_size=4,
    )  # fmt: skip


def _hgnetv2() -> keras.Model:
    return keras_hub.models.HGNetV2Backbone(
        depths=[1, 1], embedding_size=8, hidden_sizes=[16, 32], stem_channels=[3, 8, 8],
        hidden_act="relu", use_learnable_affine_block=True,
        stackwise_stage_filters=[(8, 8, 16, 1, 1, 3), (16, 8, 32, 1, 1, 3)],
        apply_downsample=[False, True], use_lightweight_conv_block=[False, True],
        image_shape=(SIZE, SIZE, 3),
    )  # fmt: skip


def _cspnet() -> keras.Model:
    return keras_hub.models.CSPNetBackbone(
        stem_filters=8, stem_kernel_size=3, stem_strides=2, stackwise_depth=[1, 1],
        stackwise_strides=[1, 2], stackwise_num_filters=[8, 16], block_type="bottleneck_block",
        stage_type="csp", expand_ratio=[2.0], bottle_ratio=[0.5], cross_linear=True,
        image_shape=(SIZE, SIZE, 3),
    )  # fmt: skip


def _mit() -> keras.Model:
    return keras_hub.models.MiTBackbone(
        layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 2],
        layerwise_sr_ratios=[2, 1], max_drop_path_rate=0.1, layerwise_patch_sizes=[7, 3],
        layerwise_strides=[4, 2], image_shape=(SIZE, SIZE, 3), hidden_dims=[8, 16],
    )  # fmt: skip


def _mobilenetv5() -> keras.Model:
    two = [[0], [0, 0]]
    return keras_hub.models.MobileNetV5Backbone(
        stackwise_block_types=[["er"], ["uir", "uir"]], stackwise_num_blocks=[1, 2],
        stackwise_num_filters=[[8], [16, 16]], stackwise_strides=[[2], [2, 1]],
        stackwise_act_layers=[["relu"], ["relu", "relu"]],
        stackwise_exp_ratios=[[2.0], [2.0, 2.0]], stackwise_se_ratios=[[0.0], [0.0, 0.0]],
        stackwise_dw_kernel_sizes=[[0], [3, 3]], stackwise_dw_start_kernel_sizes=two,
        stackwise_dw_end_kernel_sizes=two, stackwise_exp_kernel_sizes=[[3], [0, 0]],
        stackwise_pw_kernel_sizes=[[1], [0, 0]], stackwise_num_heads=two,
        stackwise_key_dims=two, stackwise_value_dims=two, stackwise_kv_strides=two,
        stackwise_use_cpe=[[False], [False, False]], stem_size=8, num_features=32,
        msfa_output_resolution=4, image_shape=(SIZE, SIZE, 3),
    )  # fmt: skip


def _metaclip2() -> keras.Model:
    vision = keras_hub.models.MetaCLIP2VisionEncoder(
        patch_size=8, hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=32,
        image_shape=(SIZE, SIZE, 3),
    )  # fmt: skip
    text = keras_hub.models.MetaCLIP2TextEncoder(
        vocabulary_size=50, embedding_dim=16, hidden_dim=16, num_layers=1, num_heads=2,
        intermediate_dim=32, max_sequence_length=8,
    )  # fmt: skip
    return keras_hub.models.MetaCLIP2Backbone(vision, text, projection_dim=16)


_NETWORKS: dict[str, tuple[Callable[[], keras.Model], type]] = {
    "vit": (_vit, keras_hub.layers.ViTImageConverter),
    "swin": (_swin, keras_hub.layers.SwinTransformerImageConverter),
    "hgnetv2": (_hgnetv2, keras_hub.layers.HGNetV2ImageConverter),
    "cspnet": (_cspnet, keras_hub.layers.CSPNetImageConverter),
    "mit": (_mit, keras_hub.layers.MiTImageConverter),
    "mobilenetv5": (_mobilenetv5, keras_hub.layers.MobileNetV5ImageConverter),
    "metaclip2": (_metaclip2, keras_hub.layers.MetaCLIP2ImageConverter),
}


@pytest.fixture(scope="module")
def preset(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], str]:
    """The preset folder of a family's tiny network, saved on first use."""
    folders: dict[str, str] = {}

    def folder(family: str) -> str:
        if family not in folders:
            keras.utils.set_random_seed(sorted(_NETWORKS).index(family))  # same in any order
            make, converter = _NETWORKS[family]
            path = tmp_path_factory.mktemp(family)
            make().save_to_preset(str(path))
            converter(image_size=(SIZE, SIZE), scale=1 / 127.5, offset=-1.0).save_to_preset(
                str(path)
            )
            folders[family] = str(path)
        return folders[family]

    return folder


def _paths(variables: list[keras.Variable]) -> set[str]:
    return {v.path for v in variables}


# family, pooling, blocks (stem first), output shape, whether a final norm follows the blocks
_FAMILY_CASES = [
    ("swin", "mean", ["patch_embedding", "stage_0", "stage_1"], (16, 16), True),
    ("hgnetv2", "avg", [f"hg_net_v2_backbone_{n}" for n in ("embedder", "encoder_stage_0",
     "encoder_stage_1")], (4, 4, 32), False),
    ("cspnet", "avg", ["csp_stem_pad_0", "stage_0_csp_conv_exp", "stage_1_csp_conv_pad_1"],
     (8, 8, 16), False),
    ("mit", "avg", ["patch_and_embed_0", "patch_and_embed_1"], (4, 4, 16), False),
    ("mobilenetv5", "avg", None, (4, 4, 32), False),
    ("metaclip2", "cls", None, (17, 16), False),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("family", "pooling", "block_names", "output", "final_norm"),
    _FAMILY_CASES,
    ids=[case[0] for case in _FAMILY_CASES],
)
def test_family_pools_freezes_by_block_and_trains_only_what_is_unfrozen(
    preset, family: str, pooling: str, block_names, output, final_norm: bool
) -> None:
    x, y = images(8, seed=3), np.arange(8) % 3
    clf = tk.TransferClassifier(preset(family), num_classes=3, augmentation=None)
    blocks = clf.spec.layout_of(clf.backbone).blocks
    assert (clf.spec.family, clf.spec.pooling, clf.backbone.output.shape[1:]) == (
        family,
        pooling,
        output,
    )
    if block_names is not None:
        assert [block[0].name for block in blocks] == block_names

    before = {v.path: v.numpy().copy() for v in clf.backbone.weights}
    clf.fit_head((x, y), epochs=1, batch_size=4, verbose=0)  # on cached features
    for variable in clf.backbone.weights:
        np.testing.assert_array_equal(variable.numpy(), before[variable.path])

    clf.unfreeze(-1)
    head = _paths([v for layer in clf.head_layers for v in layer.trainable_weights])
    last = _paths([v for layer in blocks[-1] for v in layer.trainable_weights])
    network = clf.backbone.get_layer(index=2)
    norm = _paths(network.get_layer("norm").weights) if final_norm else set()
    trainable = _paths(clf.model.trainable_weights)
    assert trainable == head | last | norm
    # One step in training mode: everything else, BatchNorm statistics included, stays put.
    before = {v.path: v.numpy().copy() for v in clf.model.weights}
    with tf.GradientTape() as tape:
        logits = clf.model(x, training=True)
        loss = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
    variables = clf.model.trainable_weights
    keras.optimizers.SGD(0.5).apply(tape.gradient(loss, variables), variables)
    changed = {v.path for v in clf.model.weights if not np.array_equal(v, before[v.path])}
    assert changed <= trainable
    assert changed & last


@pytest.mark.slow
def test_two_stage_families_find_their_stages_after_a_round_trip(preset, tmp_path) -> None:
    # The stage pattern is matched on the loaded network, without the preset folder.
    clf = tk.TransferClassifier(preset("mit"), num_classes=2, augmentation=None)
    loaded = tk.load_classifier(clf.save(tmp_path / "mit.keras"))
    loaded.unfreeze(-1)
    layout = loaded.spec.layout_of(loaded.backbone)
    assert [len(block) for block in layout.blocks] == [4, 4]  # embed, encoder, norm, reshape
    assert [block[0].trainable for block in layout.blocks] == [False, True]
    np.testing.assert_allclose(loaded.predict(images()), clf.predict(images()), atol=1e-6)


def test_listing_includes_the_new_families_with_sizes_from_their_names() -> None:
    listed = set(tk.list_backbones("keras_hub:*"))
    sizes = {
        "keras_hub:swin_base_patch4_window12_384": ("swin", 384, "mean"),
        "keras_hub:mit_b0_cityscapes_1024": ("mit", 1024, "avg"),
        "keras_hub:hgnetv2_b4_ssld_stage2_ft_in1k": ("hgnetv2", 224, "avg"),
        "keras_hub:csp_darknet_53_ra_imagenet": ("cspnet", 224, "avg"),
        "keras_hub:mobilenetv5_300m_enc_gemma3n": ("mobilenetv5", 768, "avg"),
        "keras_hub:metaclip_2_vit_huge_patch14_378": ("metaclip2", 378, "cls"),
    }
    assert set(sizes) <= listed
    for name, expected in sizes.items():
        spec = tk.get_backbone(name)
        assert (spec.family, spec.default_image_size, spec.pooling) == expected


# ---------------------------------------------------------------------- Grad-CAM


@pytest.mark.slow
def test_grad_cam_on_a_hub_vit_equals_the_cam_computed_by_hand(preset) -> None:
    keras.utils.set_random_seed(4)
    clf = tk.TransferClassifier(preset("vit"), num_classes=3, augmentation=None)
    x = images(2, seed=4)
    network = clf.backbone.get_layer(index=2)
    encoder = network.get_layer("vit_encoder")
    embedded = network.get_layer("vit_patching_and_embedding")(
        clf.backbone.get_layer("converter_rescaling")(x)
    )
    # A class-token head: the map is the input of the last of the two transformer blocks.
    tokens = encoder.encoder_layers[0](embedded)
    grid = tokens.numpy()[:, 1:].reshape(2, 4, 4, 16)  # after the class token, 4x4 patches
    lit = 0
    for class_index in range(3):
        heatmaps = tk.grad_cam(clf, x, class_index=class_index)
        with tf.GradientTape() as tape:
            tape.watch(tokens)
            logits = encoder.layer_norm(encoder.encoder_layers[1](tokens))
            for layer in clf.head_layers:
                logits = layer(logits, training=False)
            score = tf.reduce_sum(logits[:, class_index])
        gradient = tape.gradient(score, tokens).numpy()[:, 1:].reshape(2, 4, 4, 16)
        cam = np.maximum((gradient.mean(axis=(1, 2), keepdims=True) * grid).sum(-1), 0)
        cam = keras.ops.image.resize(cam[..., None], (SIZE, SIZE), interpolation="bilinear")
        cam = cam.numpy()[..., 0]
        peak = cam.max(axis=(1, 2), keepdims=True)
        expected = np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)

        assert heatmaps.shape == (2, SIZE, SIZE)
        np.testing.assert_allclose(heatmaps, expected, atol=1e-5)
        lit += int((peak > 0).sum())
    assert lit >= 2  # patches speak for classes: the comparisons are not 0 == 0


@pytest.mark.slow
@pytest.mark.parametrize("family", ["cspnet", "swin", "metaclip2"])
def test_grad_cam_on_a_hub_cnn_and_transformers(preset, family: str) -> None:
    keras.utils.set_random_seed(5)
    clf = tk.TransferClassifier(preset(family), num_classes=2, augmentation=None)
    heatmaps = np.concatenate([tk.grad_cam(clf, images(2), class_index=c) for c in (0, 1)])
    assert heatmaps.shape == (4, SIZE, SIZE)
    assert np.isfinite(heatmaps).all()
    assert heatmaps.min() >= 0
    assert heatmaps.max() == pytest.approx(1)  # not all zeros: some region speaks for a class


# ---------------------------------------------------------------------- fit and discriminative


@pytest.mark.slow
def test_fit_and_discriminative_rates_on_a_hub_vit_follow_its_blocks(preset) -> None:
    x, y = images(20, seed=5), np.arange(20) % 2
    clf = tk.TransferClassifier(preset("vit"), class_names=["a", "b"], augmentation=None)
    # Small batches: more steps per epoch, so fewer epochs of the head's step budget.
    history = clf.fit((x, y), epochs=1, batch_size=2, learning_rate=1e-3, verbose=0)
    assert history.stages.count("fine_tune") == 1
    assert {d["name"]: d["value"] for d in history.decisions}["unfreeze_from"] == 0

    clf.unfreeze(-2)
    layout = clf.spec.layout_of(clf.backbone)
    groups = discriminative.trainable_groups(clf.backbone, clf.unfrozen_from, layout=layout)
    encoder = clf.backbone.get_layer(index=2).get_layer("vit_encoder")
    # One group per transformer block from the first unfrozen one, then the final norm.
    assert [_paths(group) for group in groups] == [
        _paths(layout.blocks[1][0].weights),
        _paths(layout.blocks[2][0].weights),
        _paths(encoder.layer_norm.weights),
    ]
    clf.fine_tune((x, y), epochs=1, batch_size=8, learning_rate=(1e-4, 1e-2), verbose=0)
    rates = [float(o.learning_rate) for o in clf.model.optimizer.optimizers]
    np.testing.assert_allclose(rates, [1e-4, 10 ** -(10 / 3), 10 ** -(8 / 3), 1e-2], rtol=1e-5)


def test_a_layer_blocked_hub_cnn_is_grouped_by_name_as_before(preset) -> None:
    # MobileNetV5's blocks are its layers: rates are grouped by keras.applications' rules.
    clf = tk.TransferClassifier(preset("mobilenetv5"), num_classes=2, augmentation=None)
    clf.unfreeze(None)
    layout = clf.spec.layout_of(clf.backbone)
    groups = discriminative.trainable_groups(clf.backbone, 0, layout=layout)
    expected = discriminative.trainable_groups(clf.backbone.get_layer(index=2), 0)
    assert layout.per_layer
    assert [_paths(group) for group in groups] == [_paths(group) for group in expected]
