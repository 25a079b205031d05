"""keras-hub backbones through the registry, on tiny real keras-hub models saved as presets.

Nothing is downloaded: each test builds a small keras-hub network from its constructor, saves
it with keras-hub's own ``save_to_preset`` (the image converter with it) into a temporary
folder, and loads it through transferkit by that path, so the real ``from_preset`` code runs.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

import transferkit as tk
from images import write_class_folders
from transferkit.backbones import freezing as _freezing
from transferkit.cli.app import main
from transferkit.errors import (
    InvalidArgumentError,
    InvalidImageSizeError,
    UnknownBackboneError,
    UnknownLayerError,
    WeightsUnavailableError,
)
from transferkit.pooling import PatchGrid, TokenPooling

SIZE = 32
# DINOv2-like per-channel normalization, so the converter's scale and offset are not trivial.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def images(count: int = 3, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype("float32")


def save_preset(folder: Path, network: keras.Model, converter: keras.layers.Layer) -> str:
    network.save_to_preset(str(folder))
    converter.save_to_preset(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def vit_preset(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, keras.Model, keras.Layer]:
    keras.utils.set_random_seed(1)
    network = keras_hub.models.ViTBackbone(
        image_shape=(SIZE, SIZE, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
        mlp_dim=32,
    )  # fmt: skip
    converter = keras_hub.layers.ViTImageConverter(
        image_size=(SIZE, SIZE), scale=1 / 127.5, offset=-1.0
    )
    return save_preset(tmp_path_factory.mktemp("vit"), network, converter), network, converter


@pytest.fixture(scope="module")
def dinov2_preset(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, keras.Model, keras.Layer]:
    keras.utils.set_random_seed(2)
    network = keras_hub.models.DINOV2Backbone(
        patch_size=8, num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32,
        num_register_tokens=2, image_shape=(SIZE, SIZE, 3), position_embedding_shape=(SIZE, SIZE),
    )  # fmt: skip
    converter = keras_hub.layers.DINOV2ImageConverter(
        image_size=(SIZE, SIZE),
        scale=[1 / (255 * s) for s in STD],
        offset=[-m / s for m, s in zip(MEAN, STD, strict=True)],
    )
    return save_preset(tmp_path_factory.mktemp("dinov2"), network, converter), network, converter


@pytest.fixture(scope="module")
def resnet_preset(tmp_path_factory: pytest.TempPathFactory) -> str:
    keras.utils.set_random_seed(3)
    network = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64],
        stackwise_num_blocks=[1], stackwise_num_strides=[1], block_type="basic_block",
        image_shape=(None, None, 3),
    )  # fmt: skip
    converter = keras_hub.layers.ResNetImageConverter(
        image_size=(SIZE, SIZE), scale=1 / 255.0, offset=None
    )
    return save_preset(tmp_path_factory.mktemp("resnet"), network, converter)


def head_model(spec: tk.Backbone, backbone: keras.Model, pooling: str | None = None):
    """The classifier's graph in small: backbone (inference mode), pooling, dense logits."""
    inputs = keras.Input(backbone.input_shape[1:])
    features = spec.pooling_layer(backbone, pooling)(backbone(inputs, training=False))
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(features))


# ---------------------------------------------------------------------- listing and names


def test_keras_hub_presets_are_listed_with_family_size_and_parameters_from_metadata() -> None:
    listed = tk.list_backbones("keras_hub:*")
    metadata = keras_hub.models.DINOV2Backbone.presets["dinov2_small"]["metadata"]

    assert {"keras_hub:dinov2_small", "keras_hub:vit_base_patch16_384_imagenet"} <= set(listed)
    assert set(listed) <= set(tk.list_backbones())
    small = tk.get_backbone("keras_hub:dinov2_small")
    assert (small.family, small.parameters, small.pooling) == ("dinov2", metadata["params"], "cls")
    vit = tk.get_backbone("keras_hub:vit_base_patch16_384_imagenet")
    assert (vit.family, vit.default_image_size) == ("vit", 384)
    assert tk.get_backbone("keras_hub:resnet_50_imagenet").pooling == "avg"


def test_cli_and_docs_list_keras_hub_families(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backbones", "keras_hub:dinov2_s*"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["NAME", "FAMILY", "SIZE"]
    assert [row.split()[:3] for row in rows] == [["keras_hub:dinov2_small", "dinov2", "224"]]

    path = Path(__file__).parents[1] / "docs" / "_ext" / "backbone_table.py"
    loader = importlib.util.spec_from_file_location("_hub_backbone_table", path)
    assert loader is not None
    assert loader.loader is not None
    table = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(table)
    families = {row[0]: row for row in table.hub_family_rows()}
    assert {"vit", "deit", "dinov2", "dinov3", "siglip", "clip", "resnet"} <= set(families)
    assert families["siglip"][2] == "mean"
    assert families["dinov2"][3] == "any, default 224"


def test_unknown_keras_hub_preset_names_the_close_matches() -> None:
    with pytest.raises(UnknownBackboneError, match="keras_hub:dinov2_small") as caught:
        tk.get_backbone("keras_hub:dinov2_smal")
    assert "Received: backbone='keras_hub:dinov2_smal'" in str(caught.value)


@pytest.mark.slow
def test_keras_hub_is_imported_only_when_needed_and_missing_it_names_the_extra(
    vit_preset, tmp_path
) -> None:
    saved = tk.TransferClassifier(vit_preset[0], num_classes=3, augmentation=None)
    path = saved.save(tmp_path / "vit.keras")
    script = f"""
import sys
import numpy as np
import transferkit as tk
from transferkit.errors import MissingDependencyError
assert "keras_hub" not in sys.modules  # importing transferkit does not import keras-hub
tk.list_backbones("mobilenet*")
assert "keras_hub" not in sys.modules  # nor does a pattern that cannot match its names
sys.modules["keras_hub"] = None  # what an environment without the extra looks like
assert not any(name.startswith("keras_hub:") for name in tk.list_backbones())
try:
    tk.get_backbone("keras_hub:dinov2_small")
except MissingDependencyError as exc:
    print(exc)
del sys.modules["keras_hub"]
# Loading a saved keras-hub classifier imports keras-hub itself (safe_mode=True needs it).
print(tk.load_classifier({str(path)!r}).predict(np.zeros((1, 32, 32, 3), "uint8")).shape)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pip install 'transferkit[hub]'" in result.stdout
    assert "(1, 3)" in result.stdout


def test_remote_preset_offline_raises_weights_unavailable_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Point kagglehub at a local port that refuses, so nothing can be downloaded even online.
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
    spec = tk.get_backbone("keras_hub:deit_tiny_distilled_patch16_224_imagenet")
    with pytest.raises(WeightsUnavailableError, match="save_to_preset") as caught:
        spec.build(224)
    assert "deit_tiny_distilled_patch16_224_imagenet" in str(caught.value)


def test_a_folder_that_is_not_a_supported_image_backbone_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"class_name": "BertBackbone"}))
    with pytest.raises(InvalidArgumentError, match="BertBackbone"):
        tk.get_backbone(str(tmp_path))


# ---------------------------------------------------------------------- loading, preprocessing


def test_preset_folder_loads_through_from_preset_with_the_converter_inside(vit_preset) -> None:
    folder, network, converter = vit_preset
    spec = tk.get_backbone(folder)
    backbone = spec.build(SIZE)
    x = images()

    assert spec is tk.get_backbone(folder)
    assert spec.name == "keras_hub:" + str(Path(folder).resolve())
    assert tk.get_backbone(spec.name).default_image_size == SIZE
    assert (spec.family, spec.pooling, spec.preprocessing) == ("vit", "cls", "none")
    # Same weights, same preprocessing: the model on raw pixels is keras-hub's own pipeline.
    np.testing.assert_array_equal(backbone(x), network(converter(x)))


def test_per_channel_preprocessing_equals_the_keras_hub_converter(dinov2_preset) -> None:
    folder, network, converter = dinov2_preset
    backbone = tk.get_backbone(folder).build(SIZE)
    rescaling = backbone.get_layer("converter_rescaling")
    x = images(seed=5)

    np.testing.assert_array_equal(rescaling(x), converter(x))
    np.testing.assert_allclose(backbone(x), network({"images": converter(x)}), atol=1e-6)


def test_weights_none_builds_the_preset_architecture_randomly_initialized(vit_preset) -> None:
    folder, network, _ = vit_preset
    backbone = tk.get_backbone(folder).build(SIZE, weights=None)
    assert backbone.count_params() == network.count_params()
    assert not np.allclose(backbone(images()), network(images()))


def test_fixed_size_families_refuse_pretrained_weights_at_another_size(vit_preset) -> None:
    spec = tk.get_backbone(vit_preset[0])
    with pytest.raises(InvalidImageSizeError, match="pretrained at its preset's size only, 32x32"):
        spec.build(48)
    assert spec.build(48, weights=None).output.shape[1:] == (37, 16)  # 6x6 patches + class


def test_dinov2_interpolates_its_position_embeddings_to_other_sizes(dinov2_preset) -> None:
    spec = tk.get_backbone(dinov2_preset[0])
    assert spec.build(48)(images(size=48)).shape == (3, 1 + 2 + 36, 16)
    with pytest.raises(InvalidArgumentError, match="multiples of their patch size"):
        spec.build((48, 40))  # DINOv2 takes square images only


# ---------------------------------------------------------------------- pooling and feature maps


def test_token_pooling_takes_the_class_token_or_the_mean_of_patch_tokens(dinov2_preset) -> None:
    spec = tk.get_backbone(dinov2_preset[0])
    backbone = spec.build(SIZE)
    tokens = keras.ops.convert_to_numpy(backbone(images()))  # class token, 2 registers, 16 patches

    cls = spec.pooling_layer(backbone)
    mean = spec.pooling_layer(backbone, "mean")
    assert isinstance(cls, TokenPooling)
    assert (cls.mode, cls.prefix_tokens) == ("cls", 3)
    np.testing.assert_array_equal(cls(tokens), tokens[:, 0])
    np.testing.assert_allclose(mean(tokens), tokens[:, 3:].mean(axis=1), rtol=1e-6)


def test_pooling_must_fit_the_output(vit_preset, resnet_preset) -> None:
    vit_spec = tk.get_backbone(vit_preset[0])
    resnet_spec = tk.get_backbone(resnet_preset)
    with pytest.raises(InvalidArgumentError, match="token sequence"):
        vit_spec.pooling_layer(vit_spec.build(SIZE), "avg")
    resnet = resnet_spec.build(SIZE)
    with pytest.raises(InvalidArgumentError, match="feature map"):
        resnet_spec.pooling_layer(resnet, "cls")
    assert isinstance(resnet_spec.pooling_layer(resnet), keras.layers.GlobalAveragePooling2D)


def test_feature_map_lays_patch_tokens_on_their_grid(dinov2_preset, resnet_preset) -> None:
    spec = tk.get_backbone(dinov2_preset[0])
    backbone = spec.build(SIZE)
    tokens = keras.ops.convert_to_numpy(backbone(images()))
    grid = keras.ops.convert_to_numpy(spec.feature_map(backbone)(images()))

    assert grid.shape == (3, 4, 4, 16)
    np.testing.assert_array_equal(grid[:, 1, 2], tokens[:, 3 + 1 * 4 + 2])
    resnet_spec = tk.get_backbone(resnet_preset)
    resnet = resnet_spec.build(SIZE)
    assert resnet_spec.feature_map(resnet) is resnet
    with pytest.raises(InvalidArgumentError, match="rows"):
        PatchGrid(0, 4)


# ---------------------------------------------------------------------- freezing by block


def test_a_vit_is_frozen_by_transformer_block(vit_preset) -> None:
    spec = tk.get_backbone(vit_preset[0])
    backbone = spec.build(SIZE)
    blocks = spec.layout_of(backbone).blocks
    names = [block[0].name for block in blocks]

    assert names == ["vit_patching_and_embedding", "transformer_block_1", "transformer_block_2"]
    index = _freezing.resolve_layer_index(backbone, -1, blocks)
    _freezing.unfreeze_from(backbone, index, blocks)
    trainable = {v.path for v in backbone.trainable_weights}
    last_block = {v.path for v in blocks[-1][0].weights}
    # By position: keras numbers the name of a second ViT made in the same process.
    final_norm = {v.path for v in backbone.get_layer(index=2).get_layer("vit_encoder")
                  .layer_norm.weights}  # fmt: skip
    assert trainable == last_block | final_norm
    with pytest.raises(UnknownLayerError, match="3 blocks"):
        _freezing.resolve_layer_index(backbone, 3, blocks)
    assert _freezing.resolve_layer_index(backbone, "transformer_block_2", blocks) == 2


@pytest.mark.slow
def test_layer_norm_trains_with_its_block_and_frozen_blocks_stay_bit_identical(
    vit_preset,
) -> None:
    spec = tk.get_backbone(vit_preset[0])
    backbone = spec.build(SIZE)
    blocks = spec.layout_of(backbone).blocks
    _freezing.freeze(backbone)
    _freezing.unfreeze_from(backbone, 2, blocks)  # the last transformer block
    model = head_model(spec, backbone)
    model.compile(keras.optimizers.SGD(0.5), keras.losses.SparseCategoricalCrossentropy(True))
    frozen = {v.path: v.numpy().copy() for block in blocks[:2] for v in block[0].weights}
    norms = [
        layer
        for layer in blocks[2][0]._flatten_layers()
        if isinstance(layer, keras.layers.LayerNormalization)
    ]
    norm_before = [v.numpy().copy() for layer in norms for v in layer.weights]

    model.fit(images(8), np.arange(8) % 2, epochs=1, batch_size=4, verbose=0)

    assert norms
    assert all(layer.trainable for layer in norms)
    for block in blocks[:2]:
        for variable in block[0].weights:
            np.testing.assert_array_equal(variable.numpy(), frozen[variable.path])
    norm_after = [v.numpy() for layer in norms for v in layer.weights]
    assert any(not np.array_equal(a, b) for a, b in zip(norm_before, norm_after, strict=True))


def test_keras_hub_cnn_batch_norm_stays_in_inference_mode_when_unfrozen(resnet_preset) -> None:
    spec = tk.get_backbone(resnet_preset)
    backbone = spec.build(SIZE)
    blocks = spec.layout_of(backbone).blocks
    _freezing.unfreeze_from(backbone, 0, blocks)
    norms = _freezing.batch_norm_layers(backbone)
    statistics = [v.numpy().copy() for layer in norms for v in layer.weights]
    model = head_model(spec, backbone)
    model.compile(keras.optimizers.SGD(0.5), keras.losses.SparseCategoricalCrossentropy(True))

    model.fit(images(8), np.arange(8) % 2, epochs=1, batch_size=4, verbose=0)

    assert len(blocks) == len(backbone.get_layer(index=2).layers)
    assert norms
    assert not any(layer.trainable for layer in norms)
    after = [v.numpy() for layer in norms for v in layer.weights]
    for old, new in zip(statistics, after, strict=True):
        np.testing.assert_array_equal(old, new)


# ---------------------------------------------------------------------- the classifier


@pytest.mark.slow
def test_a_keras_hub_vit_classifier_trains_cached_fine_tunes_saves_loads_and_exports(
    vit_preset, tmp_path
) -> None:
    x, y = images(16, seed=7), np.arange(16) % 2
    clf = tk.TransferClassifier(vit_preset[0], class_names=["a", "b"], augmentation=None)
    backbone_before = {v.path: v.numpy().copy() for v in clf.backbone.weights}
    clf.fit_head((x, y), epochs=2, batch_size=8, verbose=0)  # cached features
    for variable in clf.backbone.weights:
        np.testing.assert_array_equal(variable.numpy(), backbone_before[variable.path])

    clf.unfreeze(-1)  # the last transformer block, and the final norm after it
    blocks = clf.spec.layout_of(clf.backbone).blocks
    head = {v.path for layer in clf.head_layers for v in layer.weights}
    encoder = clf.backbone.get_layer(index=2).get_layer("vit_encoder")
    tail = {v.path for v in blocks[-1][0].weights} | {v.path for v in encoder.layer_norm.weights}
    assert {v.path for v in clf.model.trainable_weights} == head | tail
    clf.fine_tune((x, y), epochs=1, batch_size=8, verbose=0)
    expected = clf.predict(x)

    loaded = tk.load_classifier(clf.save(tmp_path / "vit.keras"))
    np.testing.assert_allclose(loaded.predict(x), expected, atol=1e-6)
    assert loaded.unfrozen_from == clf.unfrozen_from == 2
    assert {v.path for v in loaded.model.trainable_weights} == head | tail
    served = tf.saved_model.load(str(clf.export(tmp_path / "vit_saved_model")))
    probabilities = served.signatures["serving_default"](images=tf.constant(x.astype("uint8")))
    np.testing.assert_allclose(
        probabilities["probabilities"], clf.predict(x.astype("uint8")), atol=1e-5
    )


@pytest.mark.slow
def test_a_saved_dinov2_classifier_loads_and_unfreezes_by_block_without_its_preset(
    dinov2_preset, tmp_path
) -> None:
    folder = tmp_path / "preset"
    shutil.copytree(dinov2_preset[0], folder)
    clf = tk.TransferClassifier(str(folder), num_classes=3, pooling="mean", augmentation=None)
    path = clf.save(tmp_path / "dinov2.keras")
    shutil.rmtree(folder)

    loaded = tk.load_classifier(path)
    loaded.unfreeze(-2)

    np.testing.assert_allclose(loaded.predict(images()), clf.predict(images()), atol=1e-6)
    assert loaded.model.get_layer("pooling").get_config()["mode"] == "mean"
    assert loaded.model.get_layer("pooling").prefix_tokens == 3
    trainable = [b[0].trainable for b in loaded.spec.layout_of(loaded.backbone).blocks]
    assert trainable == [False, True, True]
    with pytest.raises(InvalidArgumentError, match="pooling"):
        tk.TransferClassifier(dinov2_preset[0], num_classes=3, pooling="avg")


def test_siglip_uses_the_vision_tower_tokens_before_its_attention_pooling_head(tmp_path) -> None:
    vision = keras_hub.models.SigLIPVisionEncoder(
        patch_size=8, hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=32,
        image_shape=(SIZE, SIZE, 3),
    )  # fmt: skip
    text = keras_hub.models.SigLIPTextEncoder(
        vocabulary_size=50, embedding_dim=16, hidden_dim=16, num_layers=1, num_heads=2,
        intermediate_dim=32, max_sequence_length=8,
    )  # fmt: skip
    converter = keras_hub.layers.SigLIPImageConverter(
        image_size=(SIZE, SIZE), scale=1 / 127.5, offset=-1.0
    )
    folder = save_preset(tmp_path, keras_hub.models.SigLIPBackbone(vision, text), converter)
    spec = tk.get_backbone(folder)
    backbone = spec.build(SIZE)
    x = images()
    tokens_layer = vision.get_layer(next(n.name for n in vision.layers if "post_layer" in n.name))
    expected = keras.Model(vision.input, tokens_layer.output)({"images": converter(x)})

    assert (spec.family, spec.pooling) == ("siglip", "mean")
    np.testing.assert_allclose(backbone(x), expected, atol=1e-6)
    assert spec.layout_of(backbone).prefix_tokens == 0
    assert len(spec.layout_of(backbone).blocks) == 3
    assert spec.feature_map(backbone)(x).shape == (3, 4, 4, 16)
    with pytest.raises(InvalidImageSizeError, match="preset's size only"):
        spec.build(48, weights=None)


def _deit() -> tuple[keras.Model, type]:
    network = keras_hub.models.DeiTBackbone(
        image_shape=(SIZE, SIZE, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
        intermediate_dim=32,
    )  # fmt: skip
    return network, keras_hub.layers.DeiTImageConverter


def _dinov3() -> tuple[keras.Model, type]:
    network = keras_hub.models.DINOV3Backbone(
        patch_size=8, num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32,
        num_register_tokens=2, image_shape=(SIZE, SIZE, 3),
    )  # fmt: skip
    return network, keras_hub.layers.DINOV3ImageConverter


def _clip() -> tuple[keras.Model, type]:
    vision = keras_hub.models.CLIPVisionEncoder(
        patch_size=8, hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=32,
        image_shape=(SIZE, SIZE, 3),
    )  # fmt: skip
    text = keras_hub.models.CLIPTextEncoder(
        vocabulary_size=50, embedding_dim=16, hidden_dim=16, num_layers=1, num_heads=2,
        intermediate_dim=32, max_sequence_length=8,
    )  # fmt: skip
    network = keras_hub.models.CLIPBackbone(vision, text, projection_dim=16)
    return network, keras_hub.layers.CLIPImageConverter


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "family", "prefix_tokens"),
    [(_deit, "deit", 2), (_dinov3, "dinov3", 3), (_clip, "clip", 1)],
    ids=["deit", "dinov3", "clip"],
)
def test_other_transformer_families_have_blocks_tokens_and_a_grid(
    make, family: str, prefix_tokens: int, tmp_path: Path
) -> None:
    network, converter = make()
    converter = converter(image_size=(SIZE, SIZE), scale=1 / 255.0, offset=None)
    spec = tk.get_backbone(save_preset(tmp_path, network, converter))
    backbone = spec.build(SIZE)
    layout = spec.layout_of(backbone)
    x = images()

    assert (spec.family, spec.pooling) == (family, "cls")
    assert (layout.prefix_tokens, layout.patch_size, len(layout.blocks)) == (
        prefix_tokens,
        (8, 8),
        3,
    )
    np.testing.assert_array_equal(spec.pooling_layer(backbone)(backbone(x)), backbone(x)[:, 0])
    assert spec.feature_map(backbone)(x).shape == (3, 4, 4, 16)


def test_efficientnet_is_built_at_any_size_through_its_input_shape_argument(tmp_path) -> None:
    network = keras_hub.models.EfficientNetBackbone(
        stackwise_kernel_sizes=[3], stackwise_num_repeats=[1], stackwise_input_filters=[8],
        stackwise_output_filters=[8], stackwise_expansion_ratios=[1],
        stackwise_squeeze_and_excite_ratios=[0.25], stackwise_strides=[1],
        stackwise_block_types=["v1"], stackwise_width_coefficients=[1.0],
        stackwise_depth_coefficients=[1.0],
    )  # fmt: skip
    converter = keras_hub.layers.EfficientNetImageConverter(
        image_size=(SIZE, SIZE), scale=1 / 255.0, offset=None
    )
    spec = tk.get_backbone(save_preset(tmp_path, network, converter))
    backbone = spec.build(48)

    assert (spec.family, spec.pooling) == ("efficientnet", "avg")
    # At 48 px the preset's 32-px converter would resize; transferkit keeps only its scaling.
    np.testing.assert_allclose(
        backbone(images(size=48)), network(images(size=48) / 255.0), atol=1e-5
    )


@pytest.mark.slow
def test_cli_recipe_unfreezes_a_hub_transformer_by_block(
    vit_preset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --unfreeze-from counts blocks as clf.unfreeze does: -1 is the last transformer block.
    folder = write_class_folders(tmp_path / "data", {"a": 3, "b": 3}, size=SIZE)
    model = tmp_path / "hub.keras"
    status = main(
        ["train", str(folder), "--backbone", vit_preset[0], "--weights", "none", "--recipe",
         "--epochs", "1", "--fine-tune-epochs", "1", "--unfreeze-from", "-1",
         "--batch-size", "3", "--output", str(model)]
    )  # fmt: skip
    assert status == 0
    clf = tk.load_classifier(model)
    count = len(clf.spec.layout_of(clf.backbone).blocks)
    assert clf.unfrozen_from == count - 1
    assert f"fine-tuning from backbone block {count - 1} of {count}" in capsys.readouterr().out
