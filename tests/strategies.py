"""Hypothesis strategies shared by the test modules."""

from __future__ import annotations

import keras
from hypothesis import strategies as st

from transferkit import Backbone

# ---------------------------------------------------------------- training stage sequences


def stage_sequences(layer_count: int, max_steps: int = 4) -> st.SearchStrategy[list[tuple]]:
    """Sequences of ("fit_head",), ("unfreeze", k) and ("fine_tune",) steps.

    ``k`` is a layer index (negative counts from the top) or None (the whole backbone).
    Sequences start with fit_head, as a user following the recipe would; fine_tune may come
    while everything is frozen, which must raise without changing anything.
    """
    index = st.one_of(
        st.integers(-layer_count, layer_count - 1),
        st.none(),
    )
    step = st.one_of(
        st.just(("fit_head",)),
        st.tuples(st.just("unfreeze"), index),
        st.just(("fine_tune",)),
    )
    return st.lists(step, min_size=1, max_size=max_steps - 1).map(
        lambda steps: [("fit_head",), *steps]
    )


# ---------------------------------------------------------------- backbone registry

# Names from a small alphabet, so that generated fnmatch patterns often match some of them.
backbone_names = st.from_regex(r"[ab][ab0-9_]{0,6}", fullmatch=True)

# fnmatch patterns built from literals, wildcards and character classes.
fnmatch_patterns = st.lists(
    st.sampled_from(["a", "b", "_", "0", "*", "?", "[ab]", "[!a]", "[0-9]"]), max_size=5
).map("".join)


def backbone_specs(
    names: st.SearchStrategy[str] = backbone_names,
) -> st.SearchStrategy[Backbone]:
    """Valid ``transferkit.Backbone`` specs named from ``names`` (the tests never build them)."""
    constructors = st.sampled_from(
        [keras.applications.MobileNetV2, keras.applications.ResNet50, keras.applications.VGG16]
    )
    return st.integers(1, 64).flatmap(
        lambda min_size: st.builds(
            Backbone,
            name=names,
            constructor=constructors,
            preprocessing=st.sampled_from(["tf", "caffe", "torch", "none"]),
            default_image_size=st.integers(min_size, 512),
            feature_channels=st.integers(1, 4096),
            family=st.sampled_from(["mobilenet", "resnet", "vgg", "example"]),
            min_image_size=st.just(min_size),
            weight_sizes=st.none() | st.lists(st.integers(min_size, 512), min_size=1).map(tuple),
            imagenet_weights=st.booleans(),
            parameters=st.none() | st.integers(1, 10**9),
        )
    )
