"""VisionEncoder adapter and projection head (textmoco.encoders.vision / heads)."""
import pytest
import torch
from textrun import auto_image_processor

from textmoco.encoders.heads import ProjectionHead
from textmoco.encoders.vision import VisionEncoder


@pytest.fixture(scope="module")
def encoder():
    return VisionEncoder.from_scratch(image_size=28, patch_size=4, num_channels=1, hidden_size=32, num_layers=2,
                                      heads=2, pooling="mean", seed=0)


def test_from_scratch_shapes(encoder):
    x = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    batch = encoder.collate(list(x))
    assert batch.shape == (5, 1, 28, 28) and batch.dtype == torch.uint8
    a, b = encoder.make_views(batch)
    assert a.shape == (5, 1, 28, 28) and not torch.allclose(a, b)
    assert encoder(a).shape == (5, 32) and encoder.embedding_dim == 32
    cls = VisionEncoder.from_scratch(hidden_size=32, num_layers=1, heads=2, pooling="cls")
    assert cls(a).shape == (5, 32)


def test_encode_is_deterministic_and_keeps_mode(encoder):
    x = torch.randint(0, 256, (7, 1, 28, 28), dtype=torch.uint8)
    encoder.train()
    f1, f2 = encoder.encode(x, batch_size=3), encoder.encode(x, batch_size=7)
    assert f1.shape == (7, 32) and torch.allclose(f1, f2, atol=1e-5)
    assert encoder.training


def test_export_reloads_with_automodel(encoder, tmp_path):
    from transformers import AutoModel

    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    feats = encoder.encode(x)
    encoder.export(str(tmp_path), steps=0)
    model = AutoModel.from_pretrained(str(tmp_path)).eval()
    with torch.no_grad():
        h = model(pixel_values=encoder.views.normalize(x)).last_hidden_state
    assert torch.allclose(h[:, 1:].mean(1), feats, atol=1e-5)
    auto_processor = auto_image_processor()  # None on transformers < 5.2x without torchvision: not checkable there
    if auto_processor is not None:
        proc = auto_processor.from_pretrained(str(tmp_path))
        pixel = proc(images=[im.permute(1, 2, 0).numpy() for im in x], return_tensors="pt")["pixel_values"]
        assert torch.allclose(pixel, encoder.views.normalize(x), atol=1e-4)
    again = VisionEncoder.from_pretrained(str(tmp_path), views="digits")
    assert again.pooling == "mean" and torch.allclose(again.encode(x), feats, atol=1e-5)


def test_grey_images_feed_rgb_models():
    enc = VisionEncoder.from_scratch(image_size=16, patch_size=4, num_channels=3, hidden_size=16, num_layers=1,
                                     heads=2, views="rgb")
    a, _ = enc.make_views(torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8))
    assert a.shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="channels"):
        VisionEncoder.from_scratch(image_size=16, patch_size=4, hidden_size=16, num_layers=1, heads=2).make_views(
            torch.zeros(2, 3, 16, 16, dtype=torch.uint8))


def test_constructor_errors():
    with pytest.raises(ValueError, match="pooling='max'"):
        VisionEncoder.from_scratch(pooling="max")
    with pytest.raises(ValueError, match="patch_size=5"):
        VisionEncoder.from_scratch(image_size=28, patch_size=5)


def test_projection_head():
    head = ProjectionHead(32, 64, 16)
    assert head(torch.randn(4, 32)).shape == (4, 16)
    assert len([m for m in head.modules() if isinstance(m, torch.nn.Linear)]) == 2
    assert ProjectionHead(32, 64, 16, num_layers=1)(torch.randn(3, 32)).shape == (3, 16)
    with pytest.raises(ValueError, match="num_layers=0"):
        ProjectionHead(32, 64, 16, num_layers=0)
    with pytest.raises(ValueError, match=r"expects \(B, 32\)"):
        head(torch.randn(4, 31))


def test_other_backbones_pool_to_b_d():
    from transformers import ConvNextConfig, ConvNextModel, DeiTConfig, DeiTModel, Dinov2Config, Dinov2Model

    convnext = ConvNextModel(ConvNextConfig(hidden_sizes=[8, 8, 8, 16], depths=[1, 1, 1, 1], image_size=32))
    dinov2 = Dinov2Model(Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                                      patch_size=4))
    deit = DeiTModel(DeiTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                                patch_size=4), add_pooling_layer=False)
    for model, size, pooling, dim in [(convnext, 32, "pooler", 16), (dinov2, 28, "pooler", 16), (deit, 28, "cls", 16)]:
        enc = VisionEncoder(model, image_size=size)
        assert (enc.pooling, enc.embedding_dim) == (pooling, dim)
        x = torch.randint(0, 256, (2, 1, size, size), dtype=torch.uint8)  # grey images into RGB models
        assert enc(enc.make_views(x)[0]).shape == (2, dim)
        assert VisionEncoder(model, pooling="mean", image_size=size).encode(x).shape == (2, dim)
    with pytest.raises(ValueError, match="feature map"):
        VisionEncoder(convnext, pooling="cls", image_size=32)


@pytest.mark.parametrize("processor, side", [
    ({"image_processor_type": "ViTImageProcessor", "size": {"height": 32, "width": 32}}, 32),
    ({"image_processor_type": "BitImageProcessor", "size": {"shortest_edge": 40}, "crop_size": {"height": 36,
                                                                                                  "width": 36}}, 36),
])
def test_hub_style_directory_gives_normalisation_and_size_from_its_processor_config(tmp_path, processor, side):
    # a Hub checkpoint: backbone + preprocessor_config.json, no textmoco_vision.json; the config is read as a dict,
    # never as a processor class (which would need torchvision on transformers < 5.2x)
    import json

    from transformers import ViTConfig, ViTModel

    ViTModel(ViTConfig(image_size=side, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32)).save_pretrained(tmp_path)
    config = {**processor, "image_mean": [0.1, 0.2, 0.3], "image_std": [0.5, 0.6, 0.7]}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    enc = VisionEncoder.from_pretrained(str(tmp_path), views="none")
    assert (list(enc.mean), list(enc.std), enc.image_size) == ([0.1, 0.2, 0.3], [0.5, 0.6, 0.7], side)
    (tmp_path / "preprocessor_config.json").unlink()  # no processor config: the model config's size, mean 0.5
    enc = VisionEncoder.from_pretrained(str(tmp_path), views="none")
    assert (list(enc.mean), list(enc.std), enc.image_size) == ([0.5] * 3, [0.5] * 3, side)
