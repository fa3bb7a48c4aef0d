"""`--push_to_hub` at recipe level, offline: a fake HfApi records exactly which files would be uploaded; the card
is sentence-transformers' own (model-index, loss, citation), base_model is a Hub id, nothing holds a local path."""
import fnmatch
import json
import os
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")


class FakeHfApi:
    calls: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, **kwargs):
        FakeHfApi.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, folder_path, repo_id, ignore_patterns=(), **kwargs):
        files = []
        for root, _, names in os.walk(folder_path):
            for name in names:
                rel = os.path.relpath(os.path.join(root, name), folder_path).replace(os.sep, "/")
                if not any(fnmatch.fnmatch(rel, p) for p in ignore_patterns):
                    files.append(rel)
        FakeHfApi.calls.append(("upload_folder", repo_id, sorted(files)))


def test_push_to_hub_uploads_exactly_the_model(text_cli, tmp_path, monkeypatch):
    import huggingface_hub
    import textrun

    FakeHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    out = tmp_path / "run"
    code, stdout, stderr = textrun.run_inprocess(text_cli.args(out, "--push_to_hub", "--hub_model_id", "me/tiny",
                                                               max_steps=2, save_every=1))
    assert code == 0, stderr[-3000:]
    (_, repo, files), = [c for c in FakeHfApi.calls if c[0] == "upload_folder"]
    assert repo == "me/tiny"
    assert not any(f.startswith("checkpoints/") for f in files)
    assert {"README.md", "config.json", "model.safetensors", "modules.json", "tokenizer.json", "results.json",
            "textmoco_config.json", "config_sentence_transformers.json", "1_Pooling/config.json"} <= set(files)
    # no local path in anything that goes up
    for rel in files:
        if rel.endswith((".json", ".md", ".jsonl", ".txt")):
            text = (out / rel).read_text(encoding="utf-8")
            for local in (str(tmp_path), text_cli.model, str(Path.home())):
                assert local not in text, (rel, local)
    card = (out / "README.md").read_text(encoding="utf-8")
    header = yaml.safe_load(card.split("---")[1])
    assert header["library_name"] == "sentence-transformers" and header["license"] == "apache-2.0"
    assert "base_model" not in header  # the source is a local directory with no Hub id: no base_model at all
    assert header["model-index"][0]["results"][0]["metrics"]  # evaluation results as model-index
    assert "TextMoCoLoss" in card and "2501.16360" in card and "queue_size" in card
    assert "model saved to" in stdout and "SentenceTransformer(" in stdout


def test_base_model_is_a_hub_id_never_a_path(tmp_path):
    import textmoco
    from textmoco.model_cards import hub_base_model

    assert hub_base_model(textmoco.default_text_model()) == "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_base_model("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"
    assert hub_base_model(str(tmp_path)) is None
    assert hub_base_model(str(tmp_path), "org/model") == "org/model"


def test_saved_config_holds_no_absolute_path(tmp_path):
    from textmoco.runs import save_resolved_config

    path = save_resolved_config(str(tmp_path), {"model": "/home/u/models/minilm", "output_dir": "outputs/text",
                                                "hub_token": "secret", "lr": 1e-4})
    saved = json.loads(path.read_text())
    assert saved == {"model": "minilm", "output_dir": "outputs/text", "lr": 1e-4}


def test_vision_push_to_hub_uploads_exactly_the_model(tmp_path, monkeypatch):
    """The vision recipe's --push_to_hub, in-process with the fake HfApi: the exported ViT, its image processor and
    card go up; no checkpoint, no local path; the card's snippet names the Hub repo."""
    import huggingface_hub
    import textrun

    train_vision = textrun.import_recipe("train_vision")

    FakeHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    out = tmp_path / "run"
    train_vision.main(["--dataset", "digits", "--max_steps", "2", "--batch_size", "32", "--queue_size", "48",
                       "--hidden_size", "32", "--num_layers", "1", "--heads", "2", "--head_hidden", "32",
                       "--head_dim", "16", "--knn_every", "0", "--progress", "false", "--save_every", "1",
                       "--output_dir", str(out), "--push_to_hub", "--hub_model_id", "me/tiny-vit"])
    (_, repo, files), = [c for c in FakeHfApi.calls if c[0] == "upload_folder"]
    assert repo == "me/tiny-vit"
    assert not any(f.startswith("checkpoints/") for f in files)
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json", "results.json",
            "textmoco_config.json"} <= set(files), files
    for rel in files:
        if rel.endswith((".json", ".md", ".jsonl", ".txt")):
            text = (out / rel).read_text(encoding="utf-8")
            for local in (str(tmp_path), str(Path.home())):
                assert local not in text, (rel, local)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert 'from_pretrained("me/tiny-vit")' in card or "from_pretrained('me/tiny-vit')" in card
