"""The retrieval recipe's glue: the start-model guide per sample id (textmoco.guide.dataset_guide), the recipe end
to end with every guard on (tiny model, synthetic articles), and the ablation harness's options."""
import json

import pytest
import torch
import torch.nn.functional as F
from textrun import import_recipe

from textmoco.data.retrieval import CropDataset, PairDataset
from textmoco.guide import dataset_guide

recipe = import_recipe("train_retrieval")


class HashEncoder:
    """Stand-in for TextEncoder.encode: a fixed random vector per text; records the truncation it was called with."""

    def __init__(self):
        self.eval_max_length, self.lengths, self.table = 256, [], {}

    def encode(self, texts):
        self.lengths.append(self.eval_max_length)
        g = torch.Generator().manual_seed(0)
        for t in texts:
            self.table.setdefault(t, torch.randn(8, generator=g) + len(self.table))
        return torch.stack([self.table[t] for t in texts])


def test_pair_guide_holds_each_ids_first_anchor_and_positive_at_the_training_length():
    pairs = PairDataset(["d0", "d1", "d0", "d2"], ["a", "b", "c", "d"], ids=[0, 1, 0, 2])
    enc = HashEncoder()
    guide = dataset_guide(enc, pairs, max_length=64)
    assert enc.lengths and set(enc.lengths) == {64} and enc.eval_max_length == 256  # restored
    want_anchor = F.normalize(torch.stack([enc.table[t] for t in ("d0", "d1", "d2")]), dim=1)
    want_key = F.normalize(torch.stack([enc.table[t] for t in ("a", "b", "d")]), dim=1)  # "c" shares id 0 with "a"
    assert torch.allclose(guide.anchor, want_anchor) and torch.allclose(guide.key, want_key)


def test_crop_guide_is_the_whole_document_for_both_sides():
    docs = ["one two three four five", "six seven eight nine ten"]
    enc = HashEncoder()
    guide = dataset_guide(enc, CropDataset(docs), max_length=32)
    want = F.normalize(torch.stack([enc.table[d] for d in docs]), dim=1)
    assert torch.allclose(guide.anchor, want) and torch.allclose(guide.key, want)


def _articles(path, n=40):
    topics = ["river", "film", "planet", "painter", "battle"]
    with open(path, "w") as f:
        for i in range(n):
            t = topics[i % 5]
            f.write(json.dumps({"title": f"{t.title()} {i}", "description": f"{t} number {i % 7}",
                                "extract": f"The {t} {i} is known for {t} things and story {i} in region {i % 3}."})
                    + "\n")
    return path


@pytest.mark.parametrize("mode", ["pairs", "crops"])
def test_recipe_trains_with_every_guard_and_exports_a_sentence_transformer(tmp_path, tiny_bert, mode, monkeypatch):
    from sentence_transformers import SentenceTransformer

    from textmoco.evaluation.retrieval import RetrievalEvaluator

    calls, evaluate = [], RetrievalEvaluator.__call__
    monkeypatch.setattr(RetrievalEvaluator, "__call__", lambda self, model: calls.append(1) or evaluate(self, model))
    out = tmp_path / "run"
    results = recipe.main(["--articles", str(_articles(tmp_path / "a.jsonl")), "--model", tiny_bert, "--mode", mode,
                           "--output_dir", str(out), "--max_steps", "3", "--batch_size", "4", "--queue_size", "8",
                           "--max_length", "16", "--eval_max_length", "16", "--filter_warmup_steps", "1",
                           "--selection", "top_k", "--top_k", "4", "--id_guard", "true", "--guard_threshold",
                           "0.9", "--guide_threshold", "0.8", "--no_eval_before", "--progress", "false",
                           "--eval_every", "3"])
    assert results["steps"] == 3 and results["mode"] == mode
    assert set(results["after"]) >= {"ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100"}
    split = results["eval_split"]  # results.json's metrics: the protocol's names, prefixed by the split
    assert results["metrics"][f"{split}_ndcg@10"] == results["after"]["ndcg@10"]
    assert not any(k.endswith("_before") for k in results["metrics"])  # --no_eval_before
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3 and rows[-1][f"{split}_ndcg@10"] == results["after"]["ndcg@10"]  # --eval_every 3
    assert len(calls) == 1  # the step-3 evaluation is the final one: not repeated
    emb = SentenceTransformer(str(out), device="cpu").encode(["planet number 3"])
    assert emb.shape == (1, 32)
    saved = json.loads((out / "textmoco_config.json").read_text())
    assert saved["momentum"] == {"pairs": 0.9, "crops": 0.995}[mode]  # the per-mode defaults reached the run
    assert saved["key_encoder"] == {"pairs": "momentum_a", "crops": "momentum"}[mode]


def test_wiki_crops_shorter_than_the_minimum_are_an_error_before_training(tmp_path):
    # the same rule as a user's own crop documents (textmoco.data.sources): no silent dropping
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"document\(s\) are shorter than the crop minimum of 30 words"):
        recipe.main(["--articles", str(_articles(tmp_path / "a.jsonl")), "--mode", "crops", "--crop_min_length",
                     "30", "--output_dir", str(out), "--no_eval_before", "--progress", "false"])
    assert not (out / "checkpoints").exists()


def test_momentum_default_depends_on_the_mode_unless_given():
    from textmoco.cli import parse_args

    parse = lambda *a: recipe.apply_mode_defaults(parse_args(recipe.get_parser(), list(a))).momentum  # noqa: E731
    assert (parse(), parse("--mode", "pairs"), parse("--mode", "crops")) == (0.9, 0.9, 0.995)
    assert parse("--mode", "crops", "--momentum", "0.5") == 0.5 and parse("--momentum", "0.99") == 0.99


def test_key_encoder_default_depends_on_the_mode_unless_given():
    from textmoco.cli import parse_args

    parse = lambda *a: recipe.apply_mode_defaults(parse_args(recipe.get_parser(), list(a))).key_encoder  # noqa: E731
    assert (parse(), parse("--mode", "pairs"), parse("--mode", "crops")) == ("momentum_a", "momentum_a", "momentum")
    assert parse("--key_encoder", "momentum") == "momentum" and parse("--mode", "crops", "--key_encoder",
                                                                      "query") == "query"


def test_ablation_baseline_options_are_checked():
    ablation = import_recipe("ablation_retrieval")
    cells = ablation.baseline_cells(["mnrl=159", "gist=7"])
    assert [c[c.index("--max_steps") + 1] for c in cells.values()] == ["159", "7"]
    assert all(c[:2] in (["--baseline", "mnrl"], ["--baseline", "gist"]) for c in cells.values())
    assert "--batch_size" not in sum(cells.values(), [])  # the recipe's batch unless one is given
    small = ablation.baseline_cells(["mnrl=220"], 200, batch_size=16)
    assert small == {"ST mnrl, batch 16, 220 steps (= textmoco's 200 in time)":
                     ["--baseline", "mnrl", "--max_steps", "220", "--batch_size", "16"]}
    assert ablation.baseline_cells(["mnrl=59"], 50, batch_size=64, lr="1e-4") == {
        "ST mnrl, batch 64, lr 1e-4, 59 steps (= textmoco's 50 in time)":
            ["--baseline", "mnrl", "--max_steps", "59", "--batch_size", "64", "--lr", "1e-4"]}
    for bad in ("mnrl", "simcse=5", "gist=x"):
        with pytest.raises(SystemExit, match="mnrl\\|cached_mnrl\\|gist=STEPS"):
            ablation.baseline_cells([bad])
