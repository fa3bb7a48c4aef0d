"""Shared fixtures. The tests never touch the network, and the ones that run the text recipe use a tiny random BERT
(tests/textrun.py), never the 22M-parameter MiniLM."""
import os

for _name, _value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"),
                      ("TOKENIZERS_PARALLELISM", "false")):
    os.environ.setdefault(_name, _value)  # before huggingface_hub is imported: it reads these once

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """Directory of a 1-layer, width-32 random BERT with the MiniLM tokenizer (built once per session)."""
    import textrun

    return textrun.make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def text_cli(tiny_bert, tmp_path_factory):
    """textrun.TextCLI: the recipe's options with the tiny model, a 100-sentence train.txt and a 10-pair STS csv."""
    import textrun

    train, sts = textrun.write_text_data(tmp_path_factory.mktemp("text-data"))
    return textrun.TextCLI(tiny_bert, train, sts)


@pytest.fixture
def all_cpu_threads():
    """textrun.all_cpu_threads for one test."""
    import textrun

    with textrun.all_cpu_threads():
        yield
