"""The retrieval recipe on the user's own data: pairs / documents from a file or a datasets directory, streamed or
in memory, and evaluation on a BEIR-layout directory (read_beir against hand-made expectations and against the
built-in wiki-vital task it was written from)."""
import itertools
import json

import pytest
from test_retrieval_recipe import _articles
from textrun import import_recipe

from textmoco.cli import parse_args
from textmoco.data.beir import read_beir, write_beir
from textmoco.data.retrieval import CropDataset, PairDataset
from textmoco.data.streaming import StreamingDataset
from textmoco.data.wiki_vital import read_articles, retrieval_splits, retrieval_task

recipe = import_recipe("train_retrieval")


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _pairs(path, n=24):
    topics = ["river", "film", "planet", "painter"]
    return _jsonl(path, [{"anchor": f"{topics[i % 4]} kind {i % 6}", "id": 100 - 7 * (i % 6),
                          "positive": f"The {topics[i % 4]} {i} has a long story number {i} in place {i % 5}."}
                         for i in range(n)])


def _data(args, *argv):
    return recipe.training_data(recipe.apply_mode_defaults(parse_args(recipe.get_parser(), list(argv))), None, None, 0)


def test_read_beir_keeps_relevant_pairs_joins_titles_and_drops_unjudged_queries(tmp_path):
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    _jsonl(root / "corpus.jsonl", [{"_id": "d1", "title": "Nile", "text": "A river."}, {"_id": "d2", "text": "A film."},
                                   {"_id": "d3", "title": "", "text": "A planet."}])
    _jsonl(root / "queries.jsonl", [{"_id": "q1", "text": "long river"}, {"_id": "q2", "text": "movie"},
                                    {"_id": "q3", "text": "unjudged"}])
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td3\t2\nq2\td2\t0\n"
                                             "q2\td3\t1\n")
    queries, corpus, relevant = read_beir(root, "test")
    assert corpus == {"d1": "Nile A river.", "d2": "A film.", "d3": "A planet."}
    assert queries == {"q1": "long river", "q2": "movie"}  # q3 has no judgment in the split
    assert relevant == {"q1": {"d1", "d3"}, "q2": {"d3"}}  # score 0 = judged not relevant
    with pytest.raises(ValueError, match=r"--eval_split 'dev'.*the splits in .* are \['test'\]"):
        read_beir(root, "dev")
    (root / "qrels" / "bad.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td9\t1\n")
    with pytest.raises(ValueError, match="document id 'd9' is not in the document file"):
        read_beir(root, "bad")
    (root / "qrels" / "text.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\thigh\n")
    with pytest.raises(ValueError, match="line 2: the score 'high' is not a number"):
        read_beir(root, "text")
    with pytest.raises(ValueError, match="is not a directory"):
        read_beir(tmp_path / "nowhere")


def test_beir_export_of_wiki_vital_reads_back_as_the_builtin_task_and_scores_alike(tmp_path, tiny_bert):
    from textmoco.encoders.text import TextEncoder
    from textmoco.evaluation.retrieval import RetrievalEvaluator

    articles = read_articles(_articles(tmp_path / "a.jsonl"))
    task = retrieval_task(articles, retrieval_splits(articles)["test"])
    back = read_beir(write_beir(tmp_path / "beir", *task, split="test"), "test")
    assert back == task
    encoder = TextEncoder(tiny_bert, max_length=16, eval_max_length=16)
    assert RetrievalEvaluator(*back)(encoder) == RetrievalEvaluator(*task)(encoder)


def test_pairs_come_from_the_file_or_a_dataset_directory_alike(tmp_path):
    path = _pairs(tmp_path / "pairs.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    from_file = _data(None, "--train_file", str(path))
    assert isinstance(from_file, PairDataset)
    assert from_file.anchors == [r["anchor"] for r in rows] and from_file.positives == [r["positive"] for r in rows]
    assert from_file.ids == [i % 6 for i in range(len(rows))]  # the file's id groups, renumbered 0..n-1
    (tmp_path / "ds").mkdir()
    path.rename(tmp_path / "ds" / "train.jsonl")
    from_dir = _data(None, "--dataset", str(tmp_path / "ds"))
    assert (from_dir.anchors, from_dir.positives, from_dir.ids) == (from_file.anchors, from_file.positives,
                                                                   from_file.ids)
    custom = _jsonl(tmp_path / "qa.jsonl", [{"question": "q one", "answer": "a one"}, {"question": "q two",
                                                                                       "answer": "a two"}])
    named = _data(None, "--train_file", str(custom), "--anchor_column", "question", "--positive_column", "answer")
    assert named[1] == ("q two", "a two") and named.ids is None


def test_documents_become_crops_and_a_stream_reads_the_file_in_order(tmp_path):
    docs = tmp_path / "docs.txt"
    docs.write_text("one two three four five six\nseven eight nine ten eleven twelve\nalpha beta gamma delta eps\n")
    crops = _data(None, "--mode", "crops", "--train_file", str(docs))
    assert isinstance(crops, CropDataset) and len(crops) == 3 and crops.sample_id(2) == 2
    a, b = crops[0]
    assert set(a.split()) <= set("one two three four five six".split()) and set(b.split()) <= set(
        "one two three four five six".split())
    with pytest.raises(ValueError, match="shorter than the crop minimum of 6 words.*--crop_min_length"):
        _data(None, "--mode", "crops", "--train_file", str(docs), "--crop_min_length", "6")
    path = _pairs(tmp_path / "pairs.jsonl")
    stream = _data(None, "--train_file", str(path), "--streaming")
    assert isinstance(stream, StreamingDataset)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [item for _, item in itertools.islice(iter(stream), 3)] == [(r["anchor"], r["positive"]) for r in rows[:3]]
    streamed_crops = _data(None, "--mode", "crops", "--train_file", str(docs), "--streaming")
    assert next(iter(streamed_crops))[1][0] and streamed_crops.text_column == "text"
    shuffled = _data(None, "--train_file", str(path), "--streaming", "--shuffle_block", "10")
    items = [item for _, item in shuffled]  # 24 rows: blocks of 10, 10 and 4, each in its own seeded order
    want = [(r["anchor"], r["positive"]) for r in rows]
    assert items != want and [sorted(items[i:i + 10]) for i in (0, 10, 20)] == [sorted(want[i:i + 10])
                                                                                   for i in (0, 10, 20)]


@pytest.mark.parametrize("streaming", [False, True])
def test_recipe_trains_on_own_pairs_and_evaluates_on_an_eval_dir(tmp_path, tiny_bert, streaming):
    from sentence_transformers import SentenceTransformer

    articles = read_articles(_articles(tmp_path / "a.jsonl"))
    task = retrieval_task(articles, range(len(articles)))
    beir = write_beir(tmp_path / "beir", *task, split="dev")
    out = tmp_path / "run"
    results = recipe.main(["--train_file", str(_pairs(tmp_path / "pairs.jsonl")), "--eval_dir", str(beir),
                           "--eval_split", "dev", "--model", tiny_bert, "--output_dir", str(out), "--max_steps", "3",
                           "--batch_size", "4", "--queue_size", "8", "--max_length", "16", "--eval_max_length", "16",
                           "--progress", "false", "--bm25", "--streaming", str(streaming).lower()]
                          + ([] if streaming else ["--guide_threshold", "0.8"]))  # the guide needs a finite table
    assert results["steps"] == 3 and results["train_examples"] == (None if streaming else 24)
    assert (results["num_queries"], results["corpus_size"]) == (len(task[0]), 40) == (35, 40)  # the eval dir's
    assert {"dev_ndcg@10", "dev_ndcg@10_before", "bm25_dev_ndcg@10"} <= set(results["metrics"])
    assert SentenceTransformer(str(out), device="cpu").encode(["river kind 1"]).shape == (1, 32)
    assert "pairs.jsonl" in (out / "README.md").read_text()  # the card names the training data


def test_own_data_without_eval_dir_trains_and_exports_without_evaluation(tmp_path, tiny_bert):
    out = tmp_path / "run"
    results = recipe.main(["--train_file", str(_pairs(tmp_path / "pairs.jsonl")), "--model", tiny_bert,
                           "--output_dir", str(out), "--max_steps", "2", "--batch_size", "4", "--queue_size", "8",
                           "--max_length", "16", "--progress", "false", "--articles", str(tmp_path / "missing")])
    assert results["steps"] == 2 and "after" not in results and results["num_queries"] == 0
    assert (out / "model.safetensors").exists() or any(out.glob("**/model.safetensors"))


@pytest.mark.parametrize("argv, message", [
    (["--train_file", "PAIRS", "--dataset", "x"], "exactly one of --train_file and --dataset"),
    (["--train_file", "PAIRS", "--bm25"], "--bm25 and --eval_every need an evaluation set"),
    (["--train_file", "PAIRS", "--baseline", "mnrl", "--streaming"], "drop --streaming"),
    (["--streaming"], "--streaming needs --train_file or --dataset"),
    (["--train_file", "PAIRS", "--shuffle_block", "64"], "--shuffle_block 64 needs --streaming"),
    (["--shuffle_block", "64"], "--shuffle_block 64 needs --streaming"),
    (["--train_file", "PAIRS", "--streaming", "--shuffle_block", "-2"], "shuffle_block=-2 is invalid"),
    (["--train_file", "PAIRS", "--streaming", "--guide_threshold", "0.8"], "needs map-style data"),
    (["--eval_split", "train"], "--eval_split='train' is invalid for wiki-vital"),
    (["--train_file", "PAIRS", "--positive_column", "doc"], "no positive column 'doc'"),
])
def test_bad_own_data_options_stop_before_training(tmp_path, tiny_bert, argv, message):
    pairs = str(_pairs(tmp_path / "pairs.jsonl"))
    argv = [pairs if a == "PAIRS" else a for a in argv]
    with pytest.raises(ValueError, match=message):
        recipe.main(argv + ["--articles", str(_articles(tmp_path / "a.jsonl")), "--model", tiny_bert,
                            "--output_dir", str(tmp_path / "run"), "--progress", "false", "--no_eval_before"])
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("loss", ["mnrl", "cached_mnrl", "gist"])
def test_st_baseline_trains_on_own_pairs_and_stops_at_its_time_budget(tmp_path, tiny_bert, loss):
    from sentence_transformers import SentenceTransformer

    articles = read_articles(_articles(tmp_path / "a.jsonl"))
    beir = write_beir(tmp_path / "beir", *retrieval_task(articles, range(len(articles))))
    out = tmp_path / "run"
    results = recipe.main(["--train_file", str(_pairs(tmp_path / "pairs.jsonl")), "--eval_dir", str(beir),
                           "--baseline", loss, "--max_steps", "5", "--max_time_s", "1e-9", "--model", tiny_bert,
                           "--output_dir", str(out), "--batch_size", "4", "--max_length", "16",
                           "--eval_max_length", "16", "--progress", "false", "--no_eval_before"])
    assert results["mode"] == loss and results["steps"] == 1  # the budget stops it after its first step
    assert results["metrics"]["test_ndcg@10"] == results["after"]["ndcg@10"]
    assert SentenceTransformer(str(out), device="cpu").encode(["river kind 1"]).shape == (1, 32)


def test_text_studies_in_batch_baseline_is_the_pairs_baseline_on_sentence_pairs(tmp_path, tiny_bert):
    from textmoco.baselines import train_in_batch_baseline

    sentences = [f"sentence number {i} about topic {i % 3}" for i in range(8)]
    model = train_in_batch_baseline(tiny_bert, sentences, str(tmp_path / "st"), max_steps=2, batch_size=4,
                                    eval_max_length=48)
    assert model.max_seq_length == 48 and model.encode(sentences[:2]).shape == (2, 32)


def test_st_baseline_gets_the_explicit_negatives_as_extra_columns(tmp_path, tiny_bert, monkeypatch):
    from textmoco.baselines import _losses

    mnrl = _losses().MultipleNegativesRankingLoss
    widths, forward = [], mnrl.forward
    monkeypatch.setattr(mnrl, "forward", lambda self, features, labels=None: widths.append(len(features)) or
                        forward(self, features, labels))
    rows = [{"anchor": f"q {i}", "positive": f"doc {i} text", "negative": f"other doc {i + 1} text"} for i in range(8)]
    for path, width in ((_jsonl(tmp_path / "triplets.jsonl", rows), 3), (_pairs(tmp_path / "pairs.jsonl"), 2)):
        widths.clear()
        recipe.main(["--train_file", str(path), "--baseline", "mnrl", "--max_steps", "1", "--model", tiny_bert,
                     "--output_dir", str(tmp_path / f"run{width}"), "--batch_size", "4", "--max_length", "16",
                     "--progress", "false"])
        assert widths == [width]  # anchor, positive (, negative_1): one training step


def test_wiki_vital_as_files_is_the_builtin_task_and_its_negatives_are_train_articles_of_another_description(
        tmp_path, tiny_bert):
    script = import_recipe("wiki_vital_files", folder="scripts")
    source = _articles(tmp_path / "a.jsonl")
    articles = read_articles(source)
    splits = retrieval_splits(articles)
    written = script.main(["--out", str(tmp_path / "out"), "--articles", str(source)])
    for split in ("dev", "test"):
        assert read_beir(written[split], split) == retrieval_task(articles, splits[split])
    builtin = recipe.training_data(recipe.apply_mode_defaults(parse_args(recipe.get_parser(), [])), articles,
                                   splits["train"], 0)
    from_file = _data(None, "--train_file", written["pairs"])
    assert (from_file.anchors, from_file.positives, from_file.ids) == (builtin.anchors, builtin.positives,
                                                                       builtin.ids)

    mined = script.main(["--out", str(tmp_path / "hn"), "--articles", str(source), "--hard_negatives",
                         "--model", tiny_bert, "--max_length", "16"])
    triplets = _data(None, "--train_file", mined["pairs"])
    assert 0 < len(triplets) <= len(builtin) and triplets.negatives is not None
    description = {recipe.corpus_text(a): a["description"] for a in articles}
    train_texts, train_pairs = set(builtin.positives), set(zip(builtin.anchors, builtin.positives))
    for i in range(len(triplets)):
        anchor, positive, (negative,) = triplets[i]
        assert (anchor, positive) in train_pairs
        assert negative in train_texts  # never a DEV / TEST article
        assert description[negative] != anchor  # never an article answering the same description
