"""Where two (or more) retrievers differ, query by query: the rank of every relevant document under each model,
summarised by how many documents a query has relevant, and the queries that some model ranks below --depth.
The headline metrics stay the recipe's (sentence-transformers' InformationRetrievalEvaluator); this is the
diagnosis behind them (results/retrieval.md, twenty-second session: where textmoco's R@100 deficit lies).

    python scripts/compare_rankings.py MODEL_A MODEL_B [--split dev] [--articles PATH | --eval_dir BEIR_DIR]

MODEL: a sentence-transformers directory (a recipe's output) or Hub id. hit@1 = the first hit is relevant;
R@k = the fraction of a query's relevant documents in its top k (the evaluator's recall@k), per query, averaged.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
from train_retrieval import DEFAULT_ARTICLES, evaluation_task  # noqa: E402

from textmoco.data.wiki_vital import read_articles  # noqa: E402
from textmoco.evaluation.retrieval import as_sentence_transformer, relevant_ranks  # noqa: E402

BUCKETS = {"1 relevant": (1, 1), "2-5 relevant": (2, 5), "6+ relevant": (6, 10 ** 9)}


def model_ranks(path: str, queries: list[str], docs: list[str], relevant: list[list[int]], max_length: int):
    model = as_sentence_transformer(path)
    model.max_seq_length = max_length
    encode = lambda texts: model.encode(texts, batch_size=64, convert_to_tensor=True,  # noqa: E731
                                        normalize_embeddings=True, show_progress_bar=True)
    return relevant_ranks(encode(queries) @ encode(docs).T, relevant)


def summary(ranks: list[list[int]]) -> str:
    hit1 = sum(r[0] == 0 for r in ranks) / len(ranks)
    recall = lambda k: sum(sum(x < k for x in r) / len(r) for r in ranks) / len(ranks)  # noqa: E731
    return f"hit@1 {100 * hit1:6.2f}  R@10 {100 * recall(10):6.2f}  R@100 {100 * recall(100):6.2f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="sentence-transformers directories or Hub ids")
    parser.add_argument("--eval_split", "--split", dest="eval_split", default="dev",
                        help="wiki-vital dev or test, or the qrels split of --eval_dir")
    parser.add_argument("--articles", default=str(DEFAULT_ARTICLES), help="wiki-vital articles.jsonl")
    parser.add_argument("--eval_dir", default=None, help="a BEIR-layout directory instead of wiki-vital")
    parser.add_argument("--max_length", type=int, default=256, help="truncation in tokens (the recipes' 256)")
    parser.add_argument("--depth", type=int, default=100, help="list the queries some model ranks below this")
    args = parser.parse_args(argv)
    queries, corpus, relevant = evaluation_task(args, None if args.eval_dir else read_articles(args.articles))
    cids = list(corpus)
    position = {c: i for i, c in enumerate(cids)}
    qids = [q for q in queries if any(c in position for c in relevant.get(q, ()))]  # as the evaluator: judged ones
    rel = [[position[c] for c in relevant[q] if c in position] for q in qids]
    ranks = [(m, model_ranks(m, [queries[q] for q in qids], [corpus[c] for c in cids], rel, args.max_length))
             for m in args.models]
    print(f"{len(qids)} queries, {len(cids)} documents")
    for bucket, (lo, hi) in BUCKETS.items():
        keep = [i for i, r in enumerate(rel) if lo <= len(r) <= hi]
        if keep:
            print(f"{bucket} ({len(keep)} queries)")
            for m, r in ranks:
                print(f"  {m[-40:]:40s} {summary([r[i] for i in keep])}")
    print(f"queries whose first relevant document is outside some model's top {args.depth} "
          "(its 0-based rank per model):")
    for i, q in enumerate(qids):
        best = [r[i][0] for _, r in ranks]
        if max(best) >= args.depth:
            print(f"  {best}  {queries[q]!r}")


if __name__ == "__main__":
    main()
