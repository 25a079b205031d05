"""The backbone registry: listing, lookup, registration, errors and read-only access."""

from __future__ import annotations

import dataclasses
import fnmatch
import uuid
from collections.abc import Iterator

import keras
import pytest
from hypothesis import given
from hypothesis import strategies as st

import transferkit as tk
from strategies import backbone_names, backbone_specs, fnmatch_patterns
from transferkit.backbones.builtin import BUILTIN_BACKBONES
from transferkit.backbones.registry import _DEFAULT, BackboneRegistry
from transferkit.errors import (
    BackboneExistsError,
    InvalidArgumentError,
    UnknownBackboneError,
)
from transferkit.preprocessing import PREPROCESSING_MODES

# The families issue 2 asks for, by the names it gives them (Keras 3 ships no RegNet).
REQUIRED_BACKBONES = {
    "mobilenet": ["mobilenet", "mobilenet_v2"],
    "mobilenet_v3": ["mobilenet_v3_small", "mobilenet_v3_large"],
    "efficientnet": [f"efficientnet_b{i}" for i in range(8)],
    "efficientnet_v2": [
        *(f"efficientnet_v2_b{i}" for i in range(4)),
        "efficientnet_v2_s",
        "efficientnet_v2_m",
        "efficientnet_v2_l",
    ],
    "resnet": ["resnet50", "resnet101", "resnet152"],
    "resnet_v2": ["resnet50_v2", "resnet101_v2", "resnet152_v2"],
    "convnext": [f"convnext_{s}" for s in ("tiny", "small", "base", "large", "xlarge")],
    "densenet": ["densenet121", "densenet169", "densenet201"],
    "inception": ["inception_v3", "inception_resnet_v2"],
    "xception": ["xception"],
    "vgg": ["vgg16", "vgg19"],
    "nasnet": ["nasnet_mobile", "nasnet_large"],
}


def tiny_constructor(
    include_top: bool = False,
    weights: str | None = None,
    input_shape: tuple[int, int, int] = (16, 16, 3),
) -> keras.Model:
    del include_top, weights
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))


def tiny_spec(name: str, channels: int = 4) -> tk.Backbone:
    return tk.Backbone(
        name=name,
        constructor=tiny_constructor,
        preprocessing="tf",
        default_image_size=16,
        feature_channels=channels,
        family="test",
        min_image_size=8,
        imagenet_weights=False,
    )


@pytest.fixture
def fresh_name() -> Iterator[str]:
    """A name nobody registered; whatever a test registers under it is removed afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield name
    if name in _DEFAULT.names(name):
        _DEFAULT.unregister(name)


# ---------------------------------------------------------------- list_backbones


def test_list_backbones_is_sorted() -> None:
    names = tk.list_backbones()
    assert names == sorted(names)


def test_list_backbones_has_no_duplicates() -> None:
    names = tk.list_backbones()
    assert len(names) == len(set(names))


def test_list_backbones_filters_with_an_fnmatch_pattern() -> None:
    assert tk.list_backbones("efficientnet_b*") == [f"efficientnet_b{i}" for i in range(8)]


def test_list_backbones_matches_character_classes() -> None:
    assert tk.list_backbones("resnet[0-9]*_v2") == ["resnet101_v2", "resnet152_v2", "resnet50_v2"]


def test_list_backbones_pattern_without_match_gives_empty_list() -> None:
    assert tk.list_backbones("no_such_backbone_*") == []


def test_list_backbones_rejects_a_non_string_pattern() -> None:
    with pytest.raises(InvalidArgumentError, match="Received: pattern=3"):
        tk.list_backbones(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("family", sorted(REQUIRED_BACKBONES))
def test_every_required_family_is_built_in(family: str) -> None:
    names = REQUIRED_BACKBONES[family]
    assert set(names) <= set(tk.list_backbones())


def test_every_keras_application_classifier_is_covered_by_a_built_in() -> None:
    # Catches a Keras upgrade that adds a classifier (RegNet, say) the table lacks.
    classifiers = {
        name: getattr(keras.applications, name)
        for name in dir(keras.applications)
        if name[:1].isupper() and callable(getattr(keras.applications, name))
    }
    covered = {backbone.constructor for backbone in BUILTIN_BACKBONES}
    assert classifiers
    assert [name for name, fn in sorted(classifiers.items()) if fn not in covered] == []


def test_every_built_in_is_registered_under_its_name() -> None:
    for backbone in BUILTIN_BACKBONES:
        assert tk.get_backbone(backbone.name) is backbone


def test_built_in_names_are_snake_case() -> None:
    for backbone in BUILTIN_BACKBONES:
        assert backbone.name == backbone.name.lower()
        assert backbone.name.replace("_", "").isalnum()


# ---------------------------------------------------------------- get_backbone


def test_get_backbone_returns_the_keras_constructor_and_its_facts() -> None:
    spec = tk.get_backbone("mobilenet_v2")
    assert spec.constructor is keras.applications.MobileNetV2
    assert (spec.preprocessing, spec.default_image_size, spec.feature_channels) == ("tf", 224, 1280)
    assert spec.weight_sizes == (96, 128, 160, 192, 224)


@pytest.mark.parametrize("misspelled", ["mobilenetv2", "MobileNetV2", "mobilenet-v2"])
def test_unknown_name_suggests_the_close_match(misspelled: str) -> None:
    with pytest.raises(UnknownBackboneError) as raised:
        tk.get_backbone(misspelled)
    message = str(raised.value)
    assert "Did you mean 'mobilenet_v2'?" in message
    assert message.endswith(f"Received: backbone={misspelled!r}")


def test_unknown_name_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        tk.get_backbone("mobilenetv2")


def test_unknown_name_without_close_match_points_to_list_backbones() -> None:
    with pytest.raises(UnknownBackboneError, match=r"list_backbones\(\)"):
        tk.get_backbone("zzzz_qqqq")


def test_get_backbone_rejects_a_non_string_name() -> None:
    with pytest.raises(InvalidArgumentError, match="Received: name=None"):
        tk.get_backbone(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------- register_backbone


def test_register_backbone_as_a_call_makes_it_listed_and_gettable(fresh_name: str) -> None:
    spec = tiny_spec(fresh_name)
    assert tk.register_backbone(spec) is spec
    assert tk.list_backbones(fresh_name) == [fresh_name]
    assert tk.get_backbone(fresh_name) is spec


def test_register_backbone_as_a_decorator_registers_the_constructor(fresh_name: str) -> None:
    @tk.register_backbone(
        name=fresh_name,
        preprocessing="torch",
        default_image_size=16,
        feature_channels=4,
        family="test",
        min_image_size=8,
        imagenet_weights=False,
    )
    def constructor(
        include_top: bool = False,
        weights: str | None = None,
        input_shape: tuple[int, int, int] = (16, 16, 3),
    ) -> keras.Model:
        return tiny_constructor(include_top, weights, input_shape)

    spec = tk.get_backbone(fresh_name)
    assert spec.constructor is constructor
    assert spec.preprocessing == "torch"


def test_registered_backbone_builds(fresh_name: str) -> None:
    tk.register_backbone(tiny_spec(fresh_name))
    model = tk.get_backbone(fresh_name).build(12, weights=None)
    assert model.output_shape == (None, 10, 10, 4)


def test_registering_a_taken_name_raises(fresh_name: str) -> None:
    first = tk.register_backbone(tiny_spec(fresh_name, channels=4))
    with pytest.raises(BackboneExistsError, match="overwrite=True"):
        tk.register_backbone(tiny_spec(fresh_name, channels=8))
    assert tk.get_backbone(fresh_name) is first


def test_registering_a_built_in_name_raises() -> None:
    spec = tk.get_backbone("mobilenet_v2")
    with pytest.raises(BackboneExistsError, match="Received: name='mobilenet_v2'"):
        tk.register_backbone(dataclasses.replace(spec, feature_channels=1))
    assert tk.get_backbone("mobilenet_v2") is spec


def test_decorator_on_a_taken_name_raises(fresh_name: str) -> None:
    tk.register_backbone(tiny_spec(fresh_name))
    decorator = tk.register_backbone(
        name=fresh_name,
        preprocessing="tf",
        default_image_size=16,
        feature_channels=4,
        family="test",
        min_image_size=8,
    )
    with pytest.raises(BackboneExistsError):
        decorator(tiny_constructor)


def test_overwrite_replaces_a_registered_backbone(fresh_name: str) -> None:
    tk.register_backbone(tiny_spec(fresh_name, channels=4))
    replacement = tk.register_backbone(tiny_spec(fresh_name, channels=8), overwrite=True)
    assert tk.get_backbone(fresh_name) is replacement
    assert tk.list_backbones(fresh_name) == [fresh_name]


def test_register_backbone_rejects_what_is_not_a_backbone() -> None:
    with pytest.raises(InvalidArgumentError, match=r"Only a transferkit\.Backbone"):
        tk.register_backbone(tiny_constructor)  # type: ignore[call-overload]


def test_register_backbone_rejects_a_spec_together_with_fields(fresh_name: str) -> None:
    with pytest.raises(InvalidArgumentError, match="not both"):
        tk.register_backbone(tiny_spec(fresh_name), family="other")  # type: ignore[call-overload]
    assert tk.list_backbones(fresh_name) == []


# ---------------------------------------------------------------- read-only public surface


def test_list_backbones_returns_a_copy() -> None:
    names = tk.list_backbones()
    names.append("injected")
    names.remove("mobilenet_v2")
    assert "injected" not in tk.list_backbones()
    assert "mobilenet_v2" in tk.list_backbones()


def test_backbone_is_frozen() -> None:
    spec = tk.get_backbone("mobilenet_v2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.default_image_size = 96  # type: ignore[misc]


def test_backbone_stores_weight_sizes_as_a_tuple() -> None:
    spec = dataclasses.replace(tiny_spec("sizes"), weight_sizes=[16, 32])  # type: ignore[arg-type]
    assert spec.weight_sizes == (16, 32)


def test_preprocessing_modes_are_read_only() -> None:
    with pytest.raises(TypeError):
        PREPROCESSING_MODES["new"] = "anything"  # type: ignore[index]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""),
        ("constructor", "MobileNetV2"),
        ("preprocessing", "inception"),
        ("default_image_size", 0),
        ("feature_channels", 16.0),
        ("min_image_size", True),
        ("family", ""),
        ("weight_sizes", ()),
        ("weight_sizes", (96, -1)),
        ("parameters", 0),
    ],
)
def test_backbone_rejects_an_invalid_field(field: str, value: object) -> None:
    with pytest.raises(InvalidArgumentError, match=f"Received: {field}="):
        dataclasses.replace(tiny_spec("invalid"), **{field: value})


def test_backbone_rejects_a_default_size_below_its_minimum() -> None:
    with pytest.raises(InvalidArgumentError, match="default_image_size is below min_image_size"):
        dataclasses.replace(tiny_spec("invalid"), default_image_size=4)


# ---------------------------------------------------------------- invariants (fresh registries)


@pytest.mark.slow
@given(specs=st.lists(backbone_specs(), unique_by=lambda spec: spec.name, max_size=8))
def test_registered_specs_round_trip_through_get_and_list(specs: list[tk.Backbone]) -> None:
    registry = BackboneRegistry(discover_plugins=False)
    for spec in specs:
        registry.register(spec)
    assert registry.names() == sorted(spec.name for spec in specs)
    for spec in specs:
        assert registry.get(spec.name) is spec


@given(
    names=st.lists(backbone_names, unique=True, max_size=10),
    pattern=fnmatch_patterns,
)
def test_names_agree_with_fnmatch(names: list[str], pattern: str) -> None:
    registry = BackboneRegistry([tiny_spec(name) for name in names], discover_plugins=False)
    assert registry.names(pattern) == sorted(fnmatch.filter(names, pattern))


@given(first=backbone_specs(), second=backbone_specs())
def test_registering_a_duplicate_raises_and_keeps_the_first(
    first: tk.Backbone, second: tk.Backbone
) -> None:
    registry = BackboneRegistry([first], discover_plugins=False)
    duplicate = dataclasses.replace(second, name=first.name)
    with pytest.raises(BackboneExistsError):
        registry.register(duplicate)
    assert registry.get(first.name) is first
    assert registry.names() == [first.name]


@given(first=backbone_specs(), second=backbone_specs())
def test_overwrite_replaces_and_keeps_one_entry(first: tk.Backbone, second: tk.Backbone) -> None:
    registry = BackboneRegistry([first], discover_plugins=False)
    replacement = dataclasses.replace(second, name=first.name)
    registry.register(replacement, overwrite=True)
    assert registry.get(first.name) is replacement
    assert registry.names() == [first.name]


@given(specs=st.lists(backbone_specs(), unique_by=lambda spec: spec.name, min_size=1, max_size=6))
def test_unregister_removes_only_that_name(specs: list[tk.Backbone]) -> None:
    registry = BackboneRegistry(specs, discover_plugins=False)
    registry.unregister(specs[0].name)
    assert registry.names() == sorted(spec.name for spec in specs[1:])
    with pytest.raises(UnknownBackboneError):
        registry.get(specs[0].name)
