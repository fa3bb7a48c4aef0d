"""Text data readers: bundled STS-B, user files, HF datasets (local), and their error messages."""
import csv
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest

from textmoco.data.text import (STS_DIR, SentenceDataset, load_dataset_sentences, load_sts_pairs, read_sentences,
                                sts_train_sentences)


def test_bundled_sts_splits_and_license_travel_together():
    sizes = {split: len(load_sts_pairs(split)[0]) for split in ("train", "dev", "validation", "test")}
    assert sizes == {"train": 5749, "dev": 1500, "validation": 1500, "test": 1379}
    assert (STS_DIR / "LICENSE-stsbenchmark.txt").is_file() and (STS_DIR / "README.md").is_file()
    s1, s2, scores = load_sts_pairs("test")
    assert (s1[0], s2[0], scores[0]) == ("A girl is styling her hair.", "A girl is brushing her hair.", 2.5)
    assert len(s1) == len(s2) == len(scores) and min(scores) >= 0 and max(scores) <= 5
    assert any('"' in s for s in s1 + s2)  # quotes kept verbatim (QUOTE_NONE)


def test_sts_train_sentences_unique_and_order_stable():
    sents = sts_train_sentences()
    # independent reference: raw line split, no csv module
    with open(STS_DIR / "stsb-train.tsv", encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    expected = []
    seen = set()
    for _, a, b in rows:
        for s in (a, b):
            if s not in seen:
                seen.add(s)
                expected.append(s)
    assert sents == expected
    assert len(sents) == len(set(sents)) == 10536
    assert sents[:2] == [rows[0][1], rows[0][2]]


def test_user_sts_csv_any_column_order(tmp_path):
    p = tmp_path / "pairs.csv"
    with open(p, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["score", "extra", "sentence2", "sentence1"])
        w.writerow(["4.5", "x", 'b, with "comma"', "a"])
        w.writerow(["1", "y", "d", "c"])
    assert load_sts_pairs(p) == (["a", "c"], ['b, with "comma"', "d"], [4.5, 1.0])


def test_user_sts_errors_name_the_problem(tmp_path):
    p = tmp_path / "pairs.tsv"
    p.write_text("score\ttext_a\tsentence2\n1\ta\tb\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['sentence1'\].*\['score', 'text_a', 'sentence2'\]"):
        load_sts_pairs(p)
    p.write_text("score\tsentence1\tsentence2\nhigh\ta\tb\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2: score 'high' is not a number"):
        load_sts_pairs(p)
    with pytest.raises(ValueError, match="unknown STS split 'tset'"):
        load_sts_pairs("tset")
    with pytest.raises(ValueError, match="file not found.*nope.tsv"):
        load_sts_pairs(tmp_path / "nope.tsv")


def test_read_txt_strips_and_dedups(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("  first one \nsecond\nfirst one\nthird\n", encoding="utf-8")
    assert read_sentences(p) == ["first one", "second", "third"]
    assert read_sentences(p, dedup=False) == ["first one", "second", "first one", "third"]


def test_read_csv_tsv_jsonl(tmp_path):
    (tmp_path / "s.csv").write_text('id,text\n1,"hello, world"\n2,bye\n', encoding="utf-8")
    assert read_sentences(tmp_path / "s.csv", "text") == ["hello, world", "bye"]
    (tmp_path / "s.tsv").write_text('text\tid\nsay "hi"\t1\nbye\t2\n', encoding="utf-8")
    assert read_sentences(tmp_path / "s.tsv", "text") == ['say "hi"', "bye"]
    (tmp_path / "s.jsonl").write_text('{"text": "a b"}\n\n{"text": "c d", "n": 1}\n', encoding="utf-8")
    assert read_sentences(tmp_path / "s.jsonl", text_column="text") == ["a b", "c d"]


def test_reader_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match=r"file not found: '.*missing.txt'"):
        read_sentences(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r"file is empty: '.*empty.txt'"):
        read_sentences(tmp_path / "empty.txt")
    (tmp_path / "s.csv").write_text("id,body\n1,x\n2,y\n", encoding="utf-8")
    with pytest.raises(ValueError,
                       match=r"column 'text' not found in file '.*s.csv'; the columns are \['id', 'body'\]"):
        read_sentences(tmp_path / "s.csv", "text")
    with pytest.raises(ValueError, match=r"has columns \['id', 'body'\]; pass text_column="):
        read_sentences(tmp_path / "s.csv")
    (tmp_path / "s.jsonl").write_text('{"text": "a"}\n{"body": "b"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"column 'text' not found in line 2 of .*\['body'\]"):
        read_sentences(tmp_path / "s.jsonl", "text")
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        read_sentences(tmp_path / "bad.jsonl", "text")
    (tmp_path / "s.parquet").write_text("x", encoding="utf-8")
    with pytest.raises(ValueError, match=r"unsupported file type '.parquet'"):
        read_sentences(tmp_path / "s.parquet")


def test_empty_sentences_error_or_drop(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("one\n\ntwo\n   \nthree\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"has 2 empty sentence\(s\), the first at line 2; .*drop_empty=True"):
        read_sentences(p)
    assert read_sentences(p, drop_empty=True) == ["one", "two", "three"]


def test_all_duplicates_is_an_error(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("same\nsame\nsame\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"fewer than 2 usable sentences after removing duplicates \(3 sentences, 1"):
        read_sentences(p)


def test_load_dataset_sentences_local(tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    (d / "train.csv").write_text("text,label\nhello world,0\nfoo bar,1\nhello world,1\n", encoding="utf-8")
    cache = str(tmp_path / "cache")
    assert load_dataset_sentences(str(d), "text", cache_dir=cache) == ["hello world", "foo bar"]
    assert load_dataset_sentences("csv", "text", data_files=str(d / "train.csv"), cache_dir=cache)[1] == "foo bar"
    with pytest.raises(ValueError, match=r"column 'body' not found in dataset .*\['text', 'label'\]"):
        load_dataset_sentences(str(d), "body", cache_dir=cache)
    with pytest.raises(ValueError, match="no split 'test'"):
        load_dataset_sentences(str(d), "text", split="test", cache_dir=cache)


def test_sentence_dataset(tmp_path):
    ds = SentenceDataset(["a", "b", "c"])
    assert len(ds) == 3 and ds[1] == "b"
    with pytest.raises(ValueError, match="item 1 is int, not str"):
        SentenceDataset(["a", 3])
    with pytest.raises(ValueError, match="at least 2"):
        SentenceDataset(["a"])
    p = tmp_path / "s.jsonl"
    p.write_text("\n".join(json.dumps({"t": f"s{i}"}) for i in range(4)), encoding="utf-8")
    assert list(SentenceDataset.from_file(p, "t")) == ["s0", "s1", "s2", "s3"]
