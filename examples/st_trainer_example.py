"""The textmoco objective inside sentence-transformers' own SentenceTransformerTrainer (offline, CPU, ~1 minute).

    python examples/st_trainer_example.py
"""
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments

import textmoco
from textmoco.data.text import sts_train_sentences
from textmoco.evaluation.protocol import as_sentence_evaluator
from textmoco.evaluation.sts import evaluate_sts
from textmoco.evaluation.sts_suite import STSSuiteEvaluator

model = SentenceTransformer(textmoco.default_text_model(), device="cpu")
model.max_seq_length = 32
steps = 20
# EMA + enqueue once per optimizer step, momentum schedule over the Trainer's max_steps
loss = textmoco.TextMoCoLoss(model, queue_size=1024, momentum=0.995, momentum_schedule="cosine")
args = SentenceTransformerTrainingArguments(output_dir="outputs/st_example", per_device_train_batch_size=64,
                                            max_steps=steps, learning_rate=2e-5, warmup_steps=2,
                                            save_strategy="no", report_to="none", use_cpu=True,
                                            eval_strategy="steps", eval_steps=10)
train = Dataset.from_dict({"text": sts_train_sentences()})  # one column: SimCSE-style views (dropout)
# the loss attaches its callback itself: queue + key encoder go into each Trainer checkpoint and come back on resume
# STS-B dev every 10 steps through textmoco's evaluator (add senteval_dir=... for STS12-16): logged as eval_stsb_dev
dev = as_sentence_evaluator(STSSuiteEvaluator(None, stsb_split="dev", show_progress_bar=False))
SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss, evaluator=dev).train()
model.max_seq_length = 256
print("STS-B test Spearman x100:", round(evaluate_sts(model, "test")["spearman"], 2))
model.save("outputs/st_example/model")
