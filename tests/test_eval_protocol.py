"""The evaluation protocol: every evaluator is called with a model and returns named metrics, and
``run_metrics`` names a run's record the same way for STS, retrieval and the image probe."""
import pytest
import torch

from textmoco.evaluation.probe import ProbeEvaluator, evaluate_features, raw_pixel_baseline
from textmoco.evaluation.protocol import Evaluator, run_metrics
from textmoco.evaluation.retrieval import RetrievalEvaluator, bm25_retrieval, evaluate_retrieval
from textmoco.evaluation.sts_suite import STSSuiteEvaluator

CORPUS = {f"d{i}": t for i, t in enumerate([
    "the cat sat on the mat", "dogs bark at the mailman", "a recipe for apple pie",
    "stock markets fell sharply today", "the violin is a string instrument", "volcanoes erupt molten lava"])}
QUERIES = {"a": "cat mat", "b": "violin string", "c": "lava volcanoes"}
RELEVANT = {"a": {"d0"}, "b": {"d4"}, "c": {"d5"}}


class Named:
    name, primary_metric = "dev", "x"

    def __call__(self, model):
        return {"x": 1.0, "y": 2.0, "count": 7}

    def headline(self, scores):
        return {k: scores[k] for k in ("x", "y") if k in scores}


def test_run_metrics_names_baselines_before_and_after():
    ev = Named()
    got = run_metrics(ev, {"x": 1.0, "y": 2.0, "count": 7}, {"x": 0.5, "y": 0.25, "count": 7},
                      baselines={"bm25": {"x": 0.1, "count": 7}, "missing": None})
    assert got == {"bm25_dev_x": 0.1, "dev_x_before": 0.5, "dev_y_before": 0.25,
                   "dev_x": 1.0, "dev_y": 2.0, "dev_count": 7}
    ev.name = ""
    assert run_metrics(ev, {"x": 1.0}, None) == {"x": 1.0}


def test_every_evaluator_follows_the_protocol(tiny_bert):
    from textmoco.encoders.text import TextEncoder

    images, labels = torch.rand(40, 1, 8, 8), torch.arange(40) % 4
    evaluators = [STSSuiteEvaluator(None, stsb_split="dev", show_progress_bar=False),
                  RetrievalEvaluator(QUERIES, CORPUS, RELEVANT, name="test"), ProbeEvaluator((images, labels),
                                                                                            (images, labels), k=5)]
    for ev in evaluators:
        assert isinstance(ev, Evaluator)
    enc = TextEncoder(tiny_bert, max_length=16)
    for ev in evaluators[:2]:
        scores = ev(enc)
        assert ev.primary_metric in ev.headline(scores) and set(ev.headline(scores)) <= set(scores)
    sts = evaluators[0](enc)
    assert set(evaluators[0].headline(sts)) == {"stsb_dev", "sts_avg"} and "sts_tasks" in sts


def test_retrieval_evaluator_is_the_functions_it_wraps(tiny_bert):
    from textmoco.encoders.text import TextEncoder

    enc = TextEncoder(tiny_bert, max_length=16)
    ev = RetrievalEvaluator(QUERIES, CORPUS, RELEVANT, name="test")
    assert ev(enc) == pytest.approx(evaluate_retrieval(enc, QUERIES, CORPUS, RELEVANT))
    assert ev.bm25() == bm25_retrieval(QUERIES, CORPUS, RELEVANT)
    assert set(ev.headline(ev.bm25())) == {"ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100"}


def test_probe_evaluator_is_the_functions_it_wraps():
    class Flat:
        def encode(self, x, batch_size=256):
            return x.flatten(1) @ torch.ones(64, 3) + x.flatten(1)[:, :3]

    g = torch.Generator().manual_seed(0)
    x_tr, x_te = torch.rand(60, 1, 8, 8, generator=g), torch.rand(30, 1, 8, 8, generator=g)
    y_tr, y_te = torch.arange(60) % 3, torch.arange(30) % 3
    ev = ProbeEvaluator((x_tr, y_tr), (x_te, y_te), k=7)
    assert ev(Flat()) == evaluate_features(Flat(), (x_tr, y_tr), (x_te, y_te), k=7)
    assert set(ev(Flat(), probe=False)) == {"knn"}
    assert ev.raw_pixels() == raw_pixel_baseline(x_tr, y_tr, x_te, y_te, k=7)
    before = {**ev(Flat()), "raw_pixels": ev.raw_pixels()}
    record = run_metrics(ev, ev(Flat()), before, baselines={"raw_pixels": before["raw_pixels"]})
    assert set(record) == {"raw_pixels_linear_probe", "raw_pixels_knn", "linear_probe_before", "knn_before",
                           "linear_probe", "knn"}  # the vision recipe's names (and its model card's)


class _Trainer:
    def __init__(self, main=True):
        self.accelerator = type("A", (), {"is_main_process": main})()
        self.unwrapped = type("U", (), {"encoder": "the query encoder"})()


class _DrawingEvaluator(Named):
    """Draws from the global RNG while it evaluates (as loading or exporting a model may) and records its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, model, **kwargs):
        self.calls.append((model, kwargs))
        torch.rand(100)
        return super().__call__(model)


def test_periodic_evaluation_runs_every_n_steps_on_the_main_process_and_keeps_the_rng():
    from textmoco.evaluation.protocol import periodic_evaluation

    ev = _DrawingEvaluator()
    monitor = periodic_evaluation(ev, 3, probe=False)
    torch.manual_seed(0)
    rows = {step: monitor(_Trainer(), step) for step in range(1, 8)}
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(3))  # the evaluations drew nothing from the training's RNG stream
    assert rows == {1: None, 2: None, 3: {"dev_x": 1.0, "dev_y": 2.0}, 4: None, 5: None,
                    6: {"dev_x": 1.0, "dev_y": 2.0}, 7: None}
    assert ev.calls == [("the query encoder", {"probe": False})] * 2
    assert [s for s in range(1, 8) if monitor.logs_step(s)] == [3, 6]  # the trainer logs these steps
    assert monitor.scores_at(6) == {"x": 1.0, "y": 2.0, "count": 7} and monitor.scores_at(3) is None  # the last only
    assert periodic_evaluation(ev, 3)(_Trainer(main=False), 3) is None
    assert not periodic_evaluation(ev, 0).logs_step(4)
    with pytest.raises(ValueError, match="--eval_every=-2 is invalid"):
        periodic_evaluation(ev, -2, option="--eval_every")


def test_text_recipe_evaluates_during_training_without_changing_it(text_cli, tmp_path, monkeypatch):
    """--eval_every 3 with --log_every 2: steps 3 and 6 get rows with the suite's figures (the trainer logs them
    although log_every would not), the last one is reused as the final evaluation (no third call) and equals the
    suite run afresh on the exported sentence-transformers model, and the training is the same as without the
    evaluations (loss rows equal)."""
    import json

    from sentence_transformers import SentenceTransformer
    from textmoco.evaluation.sts_suite import STSSuiteEvaluator
    from textrun import load_recipe

    calls = []
    evaluate = STSSuiteEvaluator.__call__
    monkeypatch.setattr(STSSuiteEvaluator, "__call__", lambda self, model: calls.append(1) or evaluate(self, model))
    recipe = load_recipe()
    runs, n_calls = {}, {}
    for every in (0, 3):
        out = tmp_path / f"every{every}"
        calls.clear()
        recipe.main(text_cli.args(out, "--eval_every", str(every), "--log_every", "2", max_steps=6))
        runs[every], n_calls[every] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()], \
            len(calls)
    assert n_calls == {0: 1, 3: 2}  # after training only / steps 3 and 6, the latter reused as the final figures
    plain, evaluated = runs[0], runs[3]
    assert [r["step"] for r in plain] == [2, 4, 6] and [r["step"] for r in evaluated] == [2, 3, 4, 6]
    assert [r["loss"] for r in plain] == [r["loss"] for r in evaluated if r["step"] != 3]
    name = "sts"  # text_cli's STS file is sts.csv: its task is named after the file stem
    assert {name, "sts_avg"} <= set(evaluated[1]) and name not in evaluated[0]
    final = json.loads((tmp_path / "every3" / "results.json").read_text())["metrics"]
    assert evaluated[-1]["sts_avg"] == pytest.approx(final["sts_avg"], abs=1e-4)
    exported = STSSuiteEvaluator(None, stsb_split=None, extra=(text_cli.sts_file,), show_progress_bar=False)
    fresh = evaluate(exported, SentenceTransformer(str(tmp_path / "every3"), device="cpu"))
    unmonitored = json.loads((tmp_path / "every0" / "results.json").read_text())["metrics"]
    assert fresh[name] == pytest.approx(final[name], abs=1e-3) == unmonitored[name]
    assert (tmp_path / "every3" / "training_curve.png").stat().st_size > 0


def test_retrieval_evaluation_during_training_leaves_the_training_unchanged(tiny_bert, tmp_path):
    """The retrieval evaluator exports the encoder to a temporary sentence-transformers directory mid-run; the
    losses must be those of a run without it."""
    import json

    from test_retrieval_recipe import _articles
    from textrun import import_recipe

    recipe = import_recipe("train_retrieval")
    articles = _articles(tmp_path / "a.jsonl")
    losses = {}
    for every in (0, 2):
        out = tmp_path / f"every{every}"
        recipe.main(["--articles", str(articles), "--model", tiny_bert, "--mode", "pairs", "--output_dir", str(out),
                     "--max_steps", "5", "--batch_size", "4", "--queue_size", "8", "--max_length", "16",
                     "--eval_max_length", "16", "--no_eval_before", "--progress", "false", "--eval_every", str(every)])
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        losses[every] = [r["loss"] for r in rows]
        assert [r["step"] for r in rows if "test_ndcg@10" in r] == ([2, 4] if every else [])
    assert losses[0] == losses[2] and len(losses[0]) == 5


def test_sentence_transformers_trainer_reports_the_suite_through_the_adapter(tiny_bert, tmp_path):
    """as_sentence_evaluator inside SentenceTransformerTrainer with TextMoCoLoss: the trainer logs the suite's
    figures (x0.01, named as the recipes name them, eval_ prefix), the primary metric is the suite's, and the
    figures equal the suite called directly on the trained model."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, \
        SentenceTransformerTrainingArguments

    from textmoco.evaluation.protocol import as_sentence_evaluator
    from textmoco.st_loss import TextMoCoLoss

    pairs = tmp_path / "mine.csv"
    pairs.write_text("sentence1,sentence2,score\n" + "".join(
        f"a cat number {i},a dog number {i % 3},{i % 5}\n" for i in range(12)), encoding="utf-8")
    suite = STSSuiteEvaluator(None, stsb_split=None, extra=[pairs], show_progress_bar=False)
    torch.manual_seed(0)
    model = SentenceTransformer(tiny_bert, device="cpu")
    evaluator = as_sentence_evaluator(suite)
    assert evaluator.primary_metric == "sts_avg"
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "st"), per_device_train_batch_size=8, max_steps=2, learning_rate=1e-3, seed=0,
        save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, eval_strategy="steps", eval_steps=2)
    trainer = SentenceTransformerTrainer(model=model, args=args, loss=TextMoCoLoss(model, queue_size=16),
                                         evaluator=evaluator, train_dataset=Dataset.from_dict(
                                             {"text": [f"sentence {i} about topic {i % 5}" for i in range(32)]}))
    trainer.train()
    logged = next(h for h in trainer.state.log_history if "eval_sts_avg" in h)
    direct = suite(model)
    assert logged["step"] == 2 and set(logged) >= {"eval_mine", "eval_sts_avg"}
    assert logged["eval_mine"] == pytest.approx(direct["mine"] / 100, abs=1e-6)
    assert model.model_card_data.eval_results_dict  # reached the card's evaluation results
