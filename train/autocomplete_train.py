"""Train a next-character model on words and write its run folder.

Each batch is a set of words, padded: input ^word, target word$, the loss
(softmax cross-entropy) masked after each word's end symbol. Words are
batched with others of similar length (sorted within shuffled pools) so
little time goes to padding. Early stopping on the validation words'
cross-entropy. `words_per_epoch` subsamples the training words each epoch
(a fresh seeded sample every epoch) to bound the time per epoch.

runs/<name>/
  checkpoint.safetensors   weights + model config + vocabulary + data source + metrics
  words.json               the exact train / val / test words
  test_words.txt           the held-out words, one per line (what `edge_eval eval-complete` scores)
  metrics.json             the same metrics, for people and scripts
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from edge_eval.autocomplete import KSR_SUBSET
from edge_runtime.vocabulary import Vocabulary
from train.autocomplete_model import AutocompleteNet
from train.checkpoint import save_checkpoint
from train.config import AutocompleteModelConfig, StrictConfig
from train.early_stopping import EarlyStopping
from train.models import parameter_count
from train.words import WordSplits, word_batch

SELECT_ON = ("loss", "top1")
KSR_WORDS = 100_000  # held-out words whose keystroke savings are measured: all of them (6,388 on wamerican)


@dataclass
class AutocompleteTrainConfig(StrictConfig):
    config_kind = "train config"
    epochs: int = 12  # 2x128 LSTM on wamerican: val top-1 still rising at 20 (0.458), see DESIGN-NOTES
    batch: int = 128  # words per batch
    lr: float = 1e-2
    weight_decay: float = 0.0
    patience: int = 4  # epochs without validation improvement before stopping
    grad_clip: float = 1.0
    seed: int = 0
    words_per_epoch: int = 0  # 0: every training word each epoch; else a seeded sample of this many
    # 0: every word alike; e > 0: each epoch draws words (with replacement) in proportion to
    # frequency ** e (wordfreq), so common words are seen more often; 1 is as often as people use them
    frequency_exponent: float = 0.0
    dropout: float = 0.0  # on the top layer's output, before the head, while training
    layer_dropout: float = 0.0  # between the stacked layers, while training
    label_smoothing: float = 0.0  # share of each target's probability spread over the other symbols
    # which epoch's weights are kept (and early stopping's score): "loss", the validation words'
    # cross-entropy; "top1", the mean of their next-letter top-1 counting each word once and weighted by use
    select_on: str = "loss"

    def to_dict(self) -> dict:
        return asdict(self)


def length_batches(words: list[str], batch: int, rng: np.random.Generator) -> list[list[str]]:
    """Shuffled batches of words of similar length: sort within pools of 32 batches."""
    order = rng.permutation(len(words))
    pool = batch * 32
    batches = []
    for p in range(0, len(order), pool):
        chunk = sorted((words[i] for i in order[p:p + pool]), key=len)
        batches += [chunk[b:b + batch] for b in range(0, len(chunk), batch)]
    return [batches[i] for i in rng.permutation(len(batches))]


def masked_loss(model: AutocompleteNet, words: list[str], vocab: Vocabulary,
                label_smoothing: float = 0.0) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over real targets (end symbols included, padding excluded), and their count."""
    inputs, targets, mask = (torch.from_numpy(a) for a in word_batch(words, vocab))  # each (B, T)
    logits, _ = model(inputs)  # (B, T, V)
    losses = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none",
                             label_smoothing=label_smoothing)  # (B, T)
    count = int(mask.sum())
    return (losses * mask).sum() / count, count


@torch.inference_mode()
def autocomplete_metrics(model: AutocompleteNet, words: list[str], vocab: Vocabulary, batch: int = 512,
                         weights: np.ndarray | None = None) -> dict:
    """Cross-entropy (nats per symbol), next-symbol top-1 and top-3 accuracy, teacher-forced.
    With `weights` (one per word: how often it is used) also top-1 weighted by use, each position
    counting its word's weight (as edge_eval's next_symbol_accuracy counts it)."""
    model.eval()
    total_loss = top1 = top3 = count = 0.0
    weighted_hits = weighted_count = 0.0
    for b in range(0, len(words), batch):
        inputs, targets, mask = (torch.from_numpy(a) for a in word_batch(words[b:b + batch], vocab))
        logits, _ = model(inputs)  # (B, T, V)
        logits[..., vocab.start_index] = -math.inf  # nothing predicts the start symbol
        losses = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        target_logit = logits.gather(2, targets[..., None])  # (B, T, 1)
        better = (logits >= target_logit).sum(-1) - 1  # (B, T) others ranked at or above the target
        total_loss += float((losses * mask).sum())
        top1 += float(((better == 0) & mask).sum())
        top3 += float(((better < 3) & mask).sum())
        count += float(mask.sum())
        if weights is not None:
            w = torch.as_tensor(np.asarray(weights[b:b + batch], np.float64))[:, None]  # (B, 1)
            weighted_hits += float((((better == 0) & mask) * w).sum())
            weighted_count += float((mask * w).sum())
    result = {"loss": total_loss / count, "top1": top1 / count, "top3": top3 / count, "positions": int(count)}
    if weights is not None:
        result["top1_weighted"] = weighted_hits / weighted_count
    return result


@torch.inference_mode()
def last_letter_hits(model: AutocompleteNet, words: list[str], vocab: Vocabulary) -> int:
    """The lecture's test: how many words' last letter is the top prediction after the others."""
    inputs, targets, _ = word_batch(words, vocab)
    logits, _ = model(torch.from_numpy(inputs))  # (B, T, V)
    last = torch.tensor([len(w) - 1 for w in words])  # position that predicts the last letter
    predicted = logits[torch.arange(len(words)), last].argmax(-1)  # (B,)
    return int((predicted == torch.from_numpy(targets)[torch.arange(len(words)), last]).sum())


def train_autocomplete_model(config: AutocompleteModelConfig, train_config: AutocompleteTrainConfig, splits: WordSplits,
                     vocab: Vocabulary, progress: bool = True, label: str = "") -> tuple[AutocompleteNet, dict]:
    torch.manual_seed(train_config.seed)
    rng = np.random.default_rng(train_config.seed)
    model = AutocompleteNet(config, train_config.dropout, train_config.layer_dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=train_config.epochs, eta_min=train_config.lr / 20)
    if train_config.select_on not in SELECT_ON:
        raise ValueError(f"select_on must be one of {', '.join(SELECT_ON)}, got {train_config.select_on!r}")
    stopping = EarlyStopping(train_config.patience)
    from train.lexicon import usage_weights

    val_weights = usage_weights(splits.val)  # (N_val,) how often each validation word is used
    history = []
    bar = tqdm(range(train_config.epochs), desc=label or f"{config.cell} words", disable=not progress,
               leave=False, dynamic_ncols=True)
    draw = None
    if train_config.frequency_exponent:
        from train.lexicon import sampling_weights

        draw = sampling_weights(splits.train, train_config.frequency_exponent)  # (N,)
    for epoch in bar:
        model.train()
        words = splits.train
        if draw is not None:
            count = train_config.words_per_epoch or len(words)
            words = [words[i] for i in rng.choice(len(words), count, replace=True, p=draw)]
        elif 0 < train_config.words_per_epoch < len(words):
            words = [words[i] for i in rng.choice(len(words), train_config.words_per_epoch, replace=False)]
        total, count = 0.0, 0
        for batch in length_batches(words, train_config.batch, rng):
            loss, n = masked_loss(model, batch, vocab, train_config.label_smoothing)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip)
            opt.step()
            total, count = total + loss.item() * n, count + n
        sched.step()
        val = autocomplete_metrics(model, splits.val, vocab, weights=val_weights)
        history.append({"epoch": epoch, "train_loss": total / count, "val_loss": val["loss"], "val_top1": val["top1"],
                        "val_top1_weighted": val["top1_weighted"]})
        bar.set_postfix(train=f"{total / count:.3f}", val=f"{val['loss']:.3f}", top1=f"{val['top1']:.3f}",
                        weighted=f"{val['top1_weighted']:.3f}")
        score = val["loss"] if train_config.select_on == "loss" else -(val["top1"] + val["top1_weighted"]) / 2
        if stopping.should_stop(epoch, score, model):
            break
    bar.close()
    stopping.restore_best(model)
    best = history[stopping.best_epoch]
    return model, {"best_epoch": stopping.best_epoch, "epochs_run": len(history), "val_loss": best["val_loss"],
                   "val_top1": best["val_top1"], "val_top1_weighted": best["val_top1_weighted"], "history": history}


def ngram_baseline(splits: WordSplits, vocab: Vocabulary, ksr_words: int = KSR_WORDS) -> dict:
    """The smoothed n-gram, order chosen on validation among 4-5 (and, for reference, 6-7),
    scored on the same held-out words."""
    from edge_eval.autocomplete import keystroke_savings, next_symbol_accuracy
    from train.ngram import HIGH_ORDERS, NGRAM_ORDERS, choose_order

    scores = {}
    for label, orders, words in (("ngram", NGRAM_ORDERS, ksr_words), ("ngram_high_order", HIGH_ORDERS, KSR_SUBSET)):
        ngram, val_top1 = choose_order(splits.train, splits.val, vocab, orders)
        scores[label] = {"order": ngram.order, "smoothing": "interpolated Witten-Bell", "val_top1_by_order": val_top1,
                         **next_symbol_accuracy(ngram, splits.test), **keystroke_savings(ngram, splits.test[:words])}
    return scores


def train_autocomplete_run(splits: WordSplits, config: AutocompleteModelConfig, train_config: AutocompleteTrainConfig, out_dir: Path,
                   progress: bool = True, baseline: bool = True, ksr_words: int = KSR_WORDS) -> dict:
    """Train, score against the n-gram on the held-out words, write the run folder."""
    torch.set_num_threads(1)  # small models: one thread is fastest and keeps runs repeatable
    vocab = Vocabulary.lowercase()
    out_dir = Path(out_dir)
    started = time.perf_counter()
    model, history = train_autocomplete_model(config, train_config, splits, vocab, progress, label=out_dir.name)
    seconds = time.perf_counter() - started
    test = autocomplete_metrics(model, splits.test, vocab)
    metrics = {"test_loss": test["loss"], "test_top1": test["top1"], "test_top3": test["top3"],
               "test_positions": test["positions"], "parameters": parameter_count(model),
               "train_seconds": round(seconds, 2), "best_epoch": history["best_epoch"],
               "val_top1": history["val_top1"], "val_top1_weighted": history["val_top1_weighted"],
               "epochs_run": history["epochs_run"], "ksr_words": min(ksr_words, len(splits.test)),
               "units": "next-symbol accuracy over every letter and end symbol of the held-out words, teacher-forced"}
    if "builtin" in splits.source:  # the lecture's toy: the first three letters predict the fourth
        metrics["last_letter_correct"] = last_letter_hits(model, splits.test, vocab)
    if baseline:
        metrics.update(ngram_baseline(splits, vocab, ksr_words))
    info = {"task": "autocomplete", "model": config.to_dict(), "train": train_config.to_dict(),
            "vocabulary": vocab.to_dict(), "data": {**splits.source, "train_words": len(splits.train),
                                                    "val_words": len(splits.val), "test_words": len(splits.test)},
            "metrics": metrics}
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    save_checkpoint(out_dir / "checkpoint.safetensors", weights, info)
    (out_dir / "words.json").write_text(json.dumps(splits.to_dict()))
    (out_dir / "test_words.txt").write_text("\n".join(splits.test) + "\n")  # for eval-complete on a device
    (out_dir / "metrics.json").write_text(json.dumps({**metrics, "history": history["history"]}, indent=1))
    return metrics
