"""The vision export is a plain transformers model: ``AutoModel.from_pretrained`` loads it without a warning (no
"newly initialized pooler"), its card is huggingface_hub's own (ModelCardData: model-index eval results,
base_model only a Hub id) and shows how to embed an image with AutoImageProcessor + AutoModel + the trained
pooling — a snippet that runs verbatim and gives the encoder's embedding."""
from __future__ import annotations

import contextlib
import io
import logging
import re

import numpy as np
import pytest
import torch
from textrun import auto_image_processor

yaml = pytest.importorskip("yaml")


@contextlib.contextmanager
def transformers_log():
    """Everything transformers logs (warnings included) while the block runs."""
    from transformers.utils import logging as hf_logging

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    logger = hf_logging.get_logger("transformers")
    old = logger.level
    logger.addHandler(handler)
    hf_logging.set_verbosity_warning()
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def tiny_encoder(pooling="mean"):
    from textmoco.encoders.vision import VisionEncoder

    return VisionEncoder.from_scratch(image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_layers=1,
                                      heads=2, pooling=pooling, views="none", mean=(0.3,), std=(0.2,), seed=0)


def images(n=6):
    return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_capture_sees_the_pooler_warning_of_a_save_without_pooler(tmp_path):
    """The check below is able to fail: a scratch ViT saved as is (no pooler) makes AutoModel warn."""
    from transformers import AutoModel

    tiny_encoder().backbone.save_pretrained(tmp_path)
    with transformers_log() as log:
        AutoModel.from_pretrained(str(tmp_path))
    assert "pooler" in log.getvalue()


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_export_loads_with_automodel_without_warnings(tmp_path, pooling):
    from transformers import AutoModel

    from textmoco.encoders.vision import VisionEncoder

    encoder = tiny_encoder(pooling)
    encoder.export(str(tmp_path))
    with transformers_log() as log:
        backbone = AutoModel.from_pretrained(str(tmp_path))
        again = VisionEncoder.from_pretrained(str(tmp_path), views="none")
    assert log.getvalue() == "", log.getvalue()
    assert backbone.pooler is not None
    for (name, a), b in zip(encoder.backbone.state_dict().items(), backbone.state_dict().values()):
        assert torch.equal(a, b), name
    assert again.pooling == pooling
    torch.testing.assert_close(again.encode(images()), encoder.encode(images()))


def _card(tmp_path, encoder, base_model="google/vit-base-patch16-224-in21k", dataset="mnist5k"):
    from textmoco.model_cards import write_vision_model_card

    _, comment = encoder.pooling_expression()
    path = write_vision_model_card(
        tmp_path, title="textmoco vision backbone", base_model=base_model,
        metrics={"linear_probe": 0.912345678, "knn": 0.88, "linear_probe_before": 0.5, "knn_before": 0.4},
        dataset=dataset, usage_snippet=encoder.usage_snippet(str(tmp_path)), pooling_comment=comment,
        train_config={"lr": 2e-3, "output_dir": "run"}, objective_config={"temperature": 0.2})
    text = open(path, encoding="utf-8").read()
    return text, yaml.safe_load(text.split("---")[1])


def test_vision_card_is_huggingface_hub_metadata_with_model_index(tmp_path):
    from huggingface_hub import ModelCard

    encoder = tiny_encoder()
    encoder.export(str(tmp_path))
    text, header = _card(tmp_path, encoder)
    assert header["library_name"] == "transformers" and header["pipeline_tag"] == "image-feature-extraction"
    assert header["base_model"] == "google/vit-base-patch16-224-in21k" and header["license"] == "apache-2.0"
    assert header["datasets"] == ["ylecun/mnist"] and "textmoco" in header["tags"]
    (entry,) = header["model-index"]
    assert entry["name"] == "textmoco vision backbone"
    metrics = {m["name"]: (m, r) for r in entry["results"] for m in r["metrics"]}
    assert set(metrics) == {"linear probe top-1", "knn top-1"}
    assert metrics["linear probe top-1"][0] == {"type": "accuracy", "value": 0.9123, "name": "linear probe top-1"}
    assert metrics["knn top-1"][0]["value"] == 0.88
    dataset = metrics["knn top-1"][1]["dataset"]
    assert dataset["type"] == "ylecun/mnist" and dataset["split"] == "test"
    card = ModelCard.load(str(tmp_path / "README.md"))  # huggingface_hub reads its own eval results back
    assert {r.metric_name for r in card.data.eval_results} == {"linear probe top-1", "knn top-1"}
    assert "AutoImageProcessor" in text and "2501.16360" in text and "| linear_probe_before | 0.5000 |" in text


def test_vision_card_without_hub_base_model_or_hub_dataset_names_no_path(tmp_path):
    encoder = tiny_encoder()
    encoder.export(str(tmp_path / "model"))
    data_dir = tmp_path / "my-images"
    data_dir.mkdir()
    text, header = _card(tmp_path / "model", encoder, base_model=None, dataset=str(data_dir))
    assert "base_model" not in header and "datasets" not in header
    assert header["model-index"][0]["results"][0]["dataset"]["type"] == "my-images"  # a name, not the path
    assert str(data_dir) not in text


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_card_snippet_embeds_an_image_like_the_encoder(tmp_path, monkeypatch, pooling):
    """The card's Python block, run verbatim (from the directory holding image.png), gives the encoder's
    (normalised) embedding of that image."""
    from PIL import Image

    encoder = tiny_encoder(pooling)
    out = tmp_path / "model"
    encoder.export(str(out))
    text, _ = _card(out, encoder)
    (code,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    if auto_image_processor() is None:
        pytest.skip("the card's AutoImageProcessor needs torchvision on this transformers (< 5.2x)")
    image = images(1)
    Image.fromarray(image[0, 0].numpy(), mode="L").save(tmp_path / "image.png")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    with transformers_log() as log:
        exec(compile(code, "card-snippet", "exec"), scope)  # noqa: S102 - the card's own snippet
    assert log.getvalue() == ""
    expected = torch.nn.functional.normalize(encoder.encode(image), dim=-1)
    assert scope["embedding"].shape == (1, encoder.embedding_dim)
    np.testing.assert_allclose(scope["embedding"].numpy(), expected.numpy(), atol=1e-4)
