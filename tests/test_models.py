"""Sub-network builders and the FFL network: sizes, shapes, sharing, numerics."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ffl import build_ffl_network, build_subnetwork, get_architecture


def trainable_count(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def test_resnet32_cifar100_parameter_count():
    # The official ResNet-32 for CIFAR-100 (DESIGN.md / issue 2).
    assert trainable_count(build_subnetwork("resnet32", 100, (32, 32, 3))) == 472_756


def test_ffl_resnet32_two_branches_parameter_count():
    # Shared stem + stages 1-2, two stage-3 branches with classifiers, fusion block
    # (depthwise 3x3 on 128 ch + BN, 1x1 128->64 + BN) and fused classifier.
    assert trainable_count(build_ffl_network("resnet32", 100, (32, 32, 3))) == 849_148


def test_wrn16_2_cifar100_parameter_count():
    # By hand: stem 432, stage1 32,992, stage2 131,520, stage3 525,184, final BN 256,
    # classifier 128*100+100 = 12,900 (the paper's Table VI: 2 x WRN-16-2 = 1.40M).
    assert trainable_count(build_subnetwork("wrn16_2", 100, (32, 32, 3))) == 703_284


def test_a_width_multiplier_scales_every_convolution_of_the_cifar_resnet():
    # By hand, resnet8 at half width (8/16/32 channels), 1 input channel, 10 classes:
    # stem 3*3*1*8 + BN 16 = 88; stage 1: 2 * (3*3*8*8 + 16) = 1,184; stage 2:
    # 3*3*8*16 + 32 + 3*3*16*16 + 32 + projection 8*16 + 32 = 3,680; stage 3:
    # 3*3*16*32 + 64 + 3*3*32*32 + 64 + 16*32 + 64 = 14,528; classifier 32*10 + 10 = 330.
    model = build_subnetwork("resnet8x0.5", 10, (28, 28, 1))
    assert trainable_count(model) == 19_810
    assert model.get_layer("features").output.shape[1:] == (7, 7, 32)
    assert get_architecture("resnet8x1").name == "resnet8"
    assert get_architecture("resnet32x2").widths == (32, 64, 128)
    with pytest.raises(ValueError, match="whole number of channels"):
        get_architecture("resnet8x0.3")


def test_a_fractional_wrn_width_keeps_the_16_channel_stem():
    # By hand, WRN-10-0.5 (8/16/32 channels), 1 input channel, 10 classes: stem conv
    # 3*3*1*16 = 144; stage 1 (16 -> 8): BN 32 + projection 16*8 + 3*3*16*8 + BN 16 +
    # 3*3*8*8 = 1,904; stage 2: BN 16 + 8*16 + 3*3*8*16 + BN 32 + 3*3*16*16 = 3,632;
    # stage 3: BN 32 + 16*32 + 3*3*16*32 + BN 64 + 3*3*32*32 = 14,432; final BN 64;
    # classifier 32*10 + 10 = 330.
    model = build_subnetwork("wrn10_0.5", 10, (28, 28, 1))
    assert trainable_count(model) == 20_506
    assert get_architecture("wrn16_2").name == "wrn16_2"
    with pytest.raises(ValueError, match="whole number of channels"):
        get_architecture("wrn10_0.3")


@pytest.mark.parametrize(
    "arch,input_shape,feature_shape",
    [
        ("resnet20", (32, 32, 3), (8, 8, 64)),
        ("resnet8", (28, 28, 1), (7, 7, 64)),
        ("wrn16_2", (28, 28, 1), (7, 7, 128)),
        ("resnet18", (64, 64, 3), (2, 2, 512)),
        ("resnet34", (224, 224, 3), (7, 7, 512)),
    ],
)
def test_any_input_shape_and_feature_map(arch, input_shape, feature_shape):
    model = build_subnetwork(arch, 10, input_shape)
    assert model.get_layer("features").output.shape[1:] == feature_shape
    x = np.zeros((2,) + input_shape, "float32")
    assert model(x).shape == (2, 10)
    backbone = build_subnetwork(arch, 10, input_shape, include_top=False)
    assert backbone.output.shape[1:] == feature_shape


def test_case1_shares_the_trunk_and_separates_branches():
    network = build_ffl_network("resnet8", 10, (16, 16, 3), num_branches=3)
    names = [layer.name for layer in network.layers]
    assert sum(n.startswith("shared_stem") for n in names) == 3  # conv, bn, relu once
    assert not any(n.startswith("shared_stage3") for n in names)
    for k in (1, 2, 3):
        assert f"sub{k}_stage3_block1_1_conv" in names
        assert not any(n.startswith(f"sub{k}_stage2") for n in names)
    outputs = network(np.zeros((2, 16, 16, 3), "float32"))
    assert set(outputs) == {"sub1", "sub2", "sub3", "fused"}
    # Fusion output channels N = min(C_k) = 64 for case 1 on CIFAR.
    assert network.get_layer("fused_features").output.shape[-1] == 64


def test_shared_stages_moves_the_split():
    network = build_ffl_network("resnet8", 10, (16, 16, 3), shared_stages=1)
    names = {layer.name for layer in network.layers}
    assert "sub2_stage1_block1_1_conv" in names and "shared_stage1_block1_1_conv" not in names
    with pytest.raises(ValueError, match="shared_stages"):
        build_ffl_network("resnet8", 10, (16, 16, 3), shared_stages=4)


def test_case2_different_architectures_share_nothing():
    network = build_ffl_network(["resnet8", "wrn10_2"], 10, (16, 16, 3))
    assert not any(layer.name.startswith("shared_") for layer in network.layers)
    assert network.get_layer("sub1_features").output.shape[-1] == 64
    assert network.get_layer("sub2_features").output.shape[-1] == 128
    assert network.get_layer("fused_features").output.shape[-1] == 64


def test_case2_different_spatial_sizes_are_resized():
    network = build_ffl_network(["resnet8", "resnet18"], 10, (32, 32, 3))
    assert network.get_layer("sub1_features").output.shape[1:3] == (8, 8)
    assert network.get_layer("sub2_features").output.shape[1:3] == (1, 1)
    assert network.get_layer("fused_features").output.shape[1:3] == (1, 1)


def test_unknown_architecture_names_the_known_ones():
    with pytest.raises(ValueError, match="wrn<d>_<k>"):
        get_architecture("vgg16")
    with pytest.raises(ValueError, match="6n\\+2"):
        get_architecture("resnet33")


def test_batchnorm_and_initialisers_follow_the_official_code():
    model = build_subnetwork("resnet32", 100, (32, 32, 3))
    bn = model.get_layer("stem_bn")
    assert (bn.momentum, bn.epsilon) == (0.9, 1e-5)
    kernel = model.get_layer("stage3_block2_1_conv").kernel.numpy()  # 3x3, 64 -> 64
    assert kernel.std() == pytest.approx(np.sqrt(2.0 / (9 * 64)), rel=0.03)
    dense = model.get_layer("logits")
    bound = 1 / np.sqrt(64)
    assert np.abs(dense.kernel.numpy()).max() <= bound and np.abs(dense.bias.numpy()).max() > 0


def test_strided_convs_pad_symmetrically_like_pytorch():
    model = build_subnetwork("resnet8", 10, (8, 8, 1))
    conv = model.get_layer("stage2_block1_1_conv")
    inputs = model.get_layer("stage1_block1_out").output
    probe = keras.Model(model.input, [inputs, conv.output])
    x = np.random.RandomState(0).randn(1, 8, 8, 1).astype("float32")
    block_in, out = probe(x)
    padded = tf.pad(block_in, [[0, 0], [1, 1], [1, 1], [0, 0]])
    expected = tf.nn.conv2d(padded, conv.kernel, strides=2, padding="VALID")
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-5)
