"""The wiki-vital task as the files a user brings: the TRAIN pairs as a pairs file (``anchor`` = description,
``positive`` = ``title. extract``, ``id`` = one per distinct description, the recipe's order) and the DEV and TEST
tasks in BEIR layout, for ``recipes/train_retrieval.py --train_file ... --eval_dir ...`` (the own-data path gives
the built-in run's numbers to the decimal: results/retrieval.md, eighteenth session).

``--hard_negatives`` adds one mined negative per pair (``negative`` column, sentence-transformers' layout) with
sentence-transformers' ``mine_hard_negatives``: candidates are the TRAIN articles only (never a DEV/TEST one), ranked
by the start model; the top candidate whose score is at least 5 % below the positive's (NV-Retriever's
TopK-PercPos 95 %) and that is not an article of the same description. Pairs with no such candidate among the top
``--range_max`` are dropped (the library's triplet output).

    python scripts/wiki_vital_files.py --out /tmp/wiki [--hard_negatives] [--articles PATH] [--model DIR]

Writes OUT/pairs.jsonl (or OUT/pairs_hard_negatives.jsonl), OUT/beir_dev, OUT/beir_test. The files hold Wikipedia
text (CC BY-SA 4.0, ../shared/data/wiki-vital/README.md): keep them out of anything you ship without that notice.
"""
import argparse
import json
import sys
from argparse import Namespace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import train_retrieval as recipe  # noqa: E402

from textmoco.data.beir import write_beir  # noqa: E402
from textmoco.data.wiki_vital import read_articles, retrieval_splits, retrieval_task  # noqa: E402


def mined_negatives(anchors: list[str], positives: list[str], model: str, max_length: int, range_max: int):
    """(anchor, positive, negative) rows from sentence-transformers' ``mine_hard_negatives`` over the positives."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    st = SentenceTransformer(model)
    st.max_seq_length = max_length
    mined = mine_hard_negatives(Dataset.from_dict({"anchor": anchors, "positive": positives}), st,
                                corpus=list(dict.fromkeys(positives)), range_max=range_max, relative_margin=0.05,
                                num_negatives=1, sampling_strategy="top", batch_size=64, output_format="triplet")
    return [(row["anchor"], row["positive"], row["negative"]) for row in mined]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="directory to write the files into")
    parser.add_argument("--articles", default=str(recipe.DEFAULT_ARTICLES), help="wiki-vital articles.jsonl")
    parser.add_argument("--hard_negatives", action="store_true", help="add one mined negative per pair")
    parser.add_argument("--model", default=None, help="the mining model (default: the embedded start model)")
    parser.add_argument("--max_length", type=int, default=128, help="the mining model's truncation in tokens")
    parser.add_argument("--range_max", type=int, default=50, help="candidates per anchor (the top N by the model)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    articles = read_articles(args.articles)
    splits = retrieval_splits(articles)
    written = {split: str(write_beir(out / f"beir_{split}", *retrieval_task(articles, splits[split]), split=split))
               for split in ("dev", "test")}
    options = Namespace(**{**vars(recipe.get_parser().parse_args([])), "mode": "pairs"})
    pairs = recipe.training_data(options, articles, splits["train"], seed=0)
    if args.hard_negatives:
        id_of = dict(zip(pairs.anchors, pairs.ids))  # the recipe's ids: one per distinct description
        rows = [{"anchor": a, "positive": p, "negative": n, "id": id_of[a]} for a, p, n in
                mined_negatives(pairs.anchors, pairs.positives, args.model or recipe.default_model(),
                                args.max_length, args.range_max)]
        path = out / "pairs_hard_negatives.jsonl"
    else:
        rows = [{"anchor": a, "positive": p, "id": i} for a, p, i in zip(pairs.anchors, pairs.positives, pairs.ids)]
        path = out / "pairs.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    written["pairs"] = str(path)
    print(f"{len(rows)} of {len(pairs.anchors)} TRAIN pairs -> {path}; DEV / TEST tasks -> {written['dev']}, "
          f"{written['test']}")
    return written


if __name__ == "__main__":
    main()
