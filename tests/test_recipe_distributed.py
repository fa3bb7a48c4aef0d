"""The real text recipe entry point under 2 processes on CPU (torchrun, gloo, ACCELERATE_USE_CPU=1, tiny model):
it finishes, checkpoints every process's RNG state, logs the steps log_every and an evaluation during training
name (the main process evaluates, the metrics all-reduce stays in step), and exports a model that
sentence-transformers loads; the retrieval recipe streams each process its own part of a file.
(tests/test_distributed.py pins the numerics of 2 processes against 1.)"""
import json
import socket
import sys

import numpy as np
import pytest
from safetensors.torch import load_file

import textrun


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_recipe_under_torchrun_two_processes(text_cli, tmp_path):
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                "127.0.0.1", "--master_port", str(free_port())]
    proc = textrun.popen(text_cli.args(out, "--log_every", "3", "--eval_every", "2", max_steps=4, save_every=2),
                         launcher=launcher, ACCELERATE_USE_CPU="1")
    stdout, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 0, (stdout[-3000:], stderr[-5000:])
    assert stdout.count("training on 100 sentences for 4 steps") == 1  # printed by the main process only

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 3, 4]  # 3: log_every; 2 and 4: --eval_every (4 is also the last)
    assert ["sts_avg" in r for r in rows] == [True, False, True]
    assert [r["queue_filled"] for r in rows] == [32, 32, 32]  # 2 processes x batch 8 enqueued per step
    last = out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip()
    assert last.name == "step-4"
    assert (last / "random_states_0.pkl").is_file() and (last / "random_states_1.pkl").is_file()
    queue = load_file(str(last / "queue.safetensors"))
    assert bool(queue["filled"].all()) and len(set(queue["ids"].tolist())) == 32  # two ranks, distinct samples
    saved = json.loads((out / "textmoco_config.json").read_text())
    assert saved["batch_size"] == 8 and saved["queue_size"] == 32

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(out), device="cpu")
    emb = model.encode(["A man plays the guitar.", "A dog runs in the park."], convert_to_numpy=True)
    assert emb.shape == (2, 32) and np.isfinite(emb).all()
    trained = load_file(str(last / "model.safetensors"))
    exported = load_file(str(out / "model.safetensors"))
    # the export is the trained query encoder
    name = "embeddings.word_embeddings.weight"
    assert (exported[name] == trained[f"query.encoder.model.{name}"]).all()


@pytest.mark.slow
@pytest.mark.parametrize("block", [0, 3])
def test_retrieval_recipe_streams_each_process_its_own_part_of_the_file(tiny_bert, tmp_path, block):
    """--streaming under 2 processes: after 2 steps of batch 4 the queue holds the keys of exactly the file's first
    16 pairs (ids = hashes of the anchors), each once: the two processes read different examples and none is lost.
    With --shuffle_block 3 each process (rows r, r+2, ... of the file) takes its first two blocks whole and two
    rows of its third block, those its (seed 0, epoch 0, block 2) order puts first."""
    import numpy as np

    from textmoco.data.streaming import text_id

    rows = [{"anchor": f"query {i} about topic {i % 5}", "positive": f"document {i} tells a story about topic "
             f"{i % 5} and place {i % 3}"} for i in range(40)]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "stream"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                "127.0.0.1", "--master_port", str(free_port())]
    proc = textrun.popen(["--train_file", str(pairs), "--streaming", "--model", tiny_bert, "--max_steps", "2",
                          "--batch_size", "4", "--queue_size", "32", "--max_length", "16", "--progress", "false",
                          "--save_final_checkpoint", "true", "--output_dir", str(out), "--seed", "0",
                          "--shuffle_block", str(block)], launcher=launcher,
                         recipe=textrun.REPO / "recipes" / "train_retrieval.py", ACCELERATE_USE_CPU="1")
    stdout, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 0, (stdout[-3000:], stderr[-5000:])
    queue = load_file(str(out / "checkpoints" / "step-2" / "queue.safetensors"))
    if block:
        third = [6 + j for j in np.random.default_rng([0, 0, 2]).permutation(3)[:2]]
        read = [rank + 2 * j for rank in range(2) for j in list(range(6)) + third]
    else:
        read = list(range(16))
    assert sorted(queue["ids"][queue["filled"]].tolist()) == sorted(text_id(rows[i]["anchor"]) for i in read)


@pytest.mark.parametrize("name,kind,machines", [("multi_gpu", "MULTI_GPU", 1), ("multi_node", "MULTI_GPU", 2),
                                                ("deepspeed_zero2", "DEEPSPEED", 1), ("fsdp", "FSDP", 1)])
def test_accelerate_config_examples_load(name, kind, machines):
    """examples/accelerate/*.yaml are valid for Accelerate's own config reader (unknown keys raise there) and are
    documented in docs/SCALING.md."""
    from accelerate.commands.config.config_args import load_config_from_file

    path = textrun.REPO / "examples" / "accelerate" / f"{name}.yaml"
    config = load_config_from_file(str(path))
    assert config.distributed_type.value == kind and config.num_machines == machines
    assert config.num_processes >= 2 and not config.use_cpu
    assert f"`{name}.yaml`" in (textrun.REPO / "docs" / "SCALING.md").read_text()
    if kind == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == 2
