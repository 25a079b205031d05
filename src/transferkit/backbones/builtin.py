# ruff: noqa: E501  # one row per backbone reads best as one line
"""The built-in backbones: every image classifier in ``keras.applications``.

One row per network. ``feature_channels`` and ``parameters`` are for the headless network at
its default settings; ``tests/test_builtin_backbones.py`` builds each one and checks them.
Keras 3 ships no RegNet, so there is none here.
"""

from __future__ import annotations

from keras import applications as apps

from transferkit.backbones.spec import Backbone

__all__ = ["BUILTIN_BACKBONES"]

# MobileNet V1 and V2 ship one ImageNet weights file per size; at any other size Keras loads
# the 224 px file with a warning (so does transferkit, before building). Every other network
# ships one file, which Keras loads at any size: no weight_sizes.
_MOBILENET_V1_SIZES = (128, 160, 192, 224)
_MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)

# fmt: off
BUILTIN_BACKBONES: tuple[Backbone, ...] = (
    # name, constructor, preprocessing, default size, feature channels, family, ...
    Backbone("mobilenet", apps.MobileNet, "tf", 224, 1024, "mobilenet", weight_sizes=_MOBILENET_V1_SIZES, parameters=3_228_864),
    Backbone("mobilenet_v2", apps.MobileNetV2, "tf", 224, 1280, "mobilenet", weight_sizes=_MOBILENET_V2_SIZES, parameters=2_257_984),
    Backbone("mobilenet_v3_small", apps.MobileNetV3Small, "none", 224, 576, "mobilenet", parameters=939_120),
    Backbone("mobilenet_v3_large", apps.MobileNetV3Large, "none", 224, 960, "mobilenet", parameters=2_996_352),
    Backbone("efficientnet_b0", apps.EfficientNetB0, "none", 224, 1280, "efficientnet", parameters=4_049_571),
    Backbone("efficientnet_b1", apps.EfficientNetB1, "none", 240, 1280, "efficientnet", parameters=6_575_239),
    Backbone("efficientnet_b2", apps.EfficientNetB2, "none", 260, 1408, "efficientnet", parameters=7_768_569),
    Backbone("efficientnet_b3", apps.EfficientNetB3, "none", 300, 1536, "efficientnet", parameters=10_783_535),
    Backbone("efficientnet_b4", apps.EfficientNetB4, "none", 380, 1792, "efficientnet", parameters=17_673_823),
    Backbone("efficientnet_b5", apps.EfficientNetB5, "none", 456, 2048, "efficientnet", parameters=28_513_527),
    Backbone("efficientnet_b6", apps.EfficientNetB6, "none", 528, 2304, "efficientnet", parameters=40_960_143),
    Backbone("efficientnet_b7", apps.EfficientNetB7, "none", 600, 2560, "efficientnet", parameters=64_097_687),
    Backbone("efficientnet_v2_b0", apps.EfficientNetV2B0, "none", 224, 1280, "efficientnet_v2", parameters=5_919_312),
    Backbone("efficientnet_v2_b1", apps.EfficientNetV2B1, "none", 240, 1280, "efficientnet_v2", parameters=6_931_124),
    Backbone("efficientnet_v2_b2", apps.EfficientNetV2B2, "none", 260, 1408, "efficientnet_v2", parameters=8_769_374),
    Backbone("efficientnet_v2_b3", apps.EfficientNetV2B3, "none", 300, 1536, "efficientnet_v2", parameters=12_930_622),
    Backbone("efficientnet_v2_s", apps.EfficientNetV2S, "none", 384, 1280, "efficientnet_v2", parameters=20_331_360),
    Backbone("efficientnet_v2_m", apps.EfficientNetV2M, "none", 480, 1280, "efficientnet_v2", parameters=53_150_388),
    Backbone("efficientnet_v2_l", apps.EfficientNetV2L, "none", 480, 1280, "efficientnet_v2", parameters=117_746_848),
    Backbone("resnet50", apps.ResNet50, "caffe", 224, 2048, "resnet", parameters=23_587_712),
    Backbone("resnet101", apps.ResNet101, "caffe", 224, 2048, "resnet", parameters=42_658_176),
    Backbone("resnet152", apps.ResNet152, "caffe", 224, 2048, "resnet", parameters=58_370_944),
    Backbone("resnet50_v2", apps.ResNet50V2, "tf", 224, 2048, "resnet_v2", parameters=23_564_800),
    Backbone("resnet101_v2", apps.ResNet101V2, "tf", 224, 2048, "resnet_v2", parameters=42_626_560),
    Backbone("resnet152_v2", apps.ResNet152V2, "tf", 224, 2048, "resnet_v2", parameters=58_331_648),
    Backbone("convnext_tiny", apps.ConvNeXtTiny, "none", 224, 768, "convnext", parameters=27_820_128),
    Backbone("convnext_small", apps.ConvNeXtSmall, "none", 224, 768, "convnext", parameters=49_454_688),
    Backbone("convnext_base", apps.ConvNeXtBase, "none", 224, 1024, "convnext", parameters=87_566_464),
    Backbone("convnext_large", apps.ConvNeXtLarge, "none", 224, 1536, "convnext", parameters=196_230_336),
    Backbone("convnext_xlarge", apps.ConvNeXtXLarge, "none", 224, 2048, "convnext", parameters=348_147_968),
    Backbone("densenet121", apps.DenseNet121, "torch", 224, 1024, "densenet", parameters=7_037_504),
    Backbone("densenet169", apps.DenseNet169, "torch", 224, 1664, "densenet", parameters=12_642_880),
    Backbone("densenet201", apps.DenseNet201, "torch", 224, 1920, "densenet", parameters=18_321_984),
    Backbone("inception_v3", apps.InceptionV3, "tf", 299, 2048, "inception", min_image_size=75, parameters=21_802_784),
    Backbone("inception_resnet_v2", apps.InceptionResNetV2, "tf", 299, 1536, "inception", min_image_size=75, parameters=54_336_736),
    Backbone("xception", apps.Xception, "tf", 299, 2048, "xception", min_image_size=71, parameters=20_861_480),
    Backbone("vgg16", apps.VGG16, "caffe", 224, 512, "vgg", parameters=14_714_688),
    Backbone("vgg19", apps.VGG19, "caffe", 224, 512, "vgg", parameters=20_024_384),
    Backbone("nasnet_mobile", apps.NASNetMobile, "tf", 224, 1056, "nasnet", parameters=4_269_716),
    Backbone("nasnet_large", apps.NASNetLarge, "tf", 331, 4032, "nasnet", parameters=84_916_818),
)
# fmt: on
