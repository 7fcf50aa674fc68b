"""How rnnkit's lead over the plain PyTorch script depends on the size of the training text.

    python benchmarks/word_lm_scaling.py                 # 3 sizes x 8 minutes (~26 minutes)
    python benchmarks/word_lm_scaling.py --minutes 3

``benchmarks/word_lm.py`` trains on 66k words, all the Penn Treebank text there is here
besides the test text. To see whether the ratio it measures is a property of the recipe or
of that size, this benchmark holds one test text fixed -- the second half of
``ptb.valid.txt`` (about 37k words + ``<eos>``) -- and trains on three texts that do not
touch it:

- ``37k``: the first half of ``ptb.valid.txt``;
- ``82k``: ``ptb.test.txt``;
- ``119k``: ``ptb.test.txt`` followed by the first half of ``ptb.valid.txt``.

Each text's last 10% validates, its vocabulary comes from the rest, and the test text is
read with that vocabulary (unseen words as ``<unk>``), so the two runs of a size read the
same ids. At each size ``rnnkit train --level word`` with its defaults as one model
(``--snapshots 1``: the default's recipe before its snapshot ensemble) and the plain script
of ``benchmarks/word_lm.py`` (the PyTorch example's settings) train for the same wall
budget at the same time, one CPU core each. Prints the test perplexities and their ratio
per size; writes results/word_lm_scaling.json.
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._timing import write_results  # noqa: E402
from benchmarks.word_lm import DATA, rnnkit_on_one_core, train_plain  # noqa: E402
from rnnkit.data.tokens import TokenFile, prepare  # noqa: E402
from rnnkit.models import load_language_model  # noqa: E402

SIZES = ("37k", "82k", "119k")


def build_texts(folder: Path) -> dict:
    """The three training texts and the test text, written under ``folder``; ``{name: path}``."""
    folder.mkdir(parents=True, exist_ok=True)
    valid = (DATA / "ptb.valid.txt").read_text().splitlines(keepends=True)
    test = (DATA / "ptb.test.txt").read_text().splitlines(keepends=True)
    half = len(valid) // 2
    texts = {"37k": valid[:half], "82k": test, "119k": test + valid[:half], "test": valid[half:]}
    paths = {}
    for name, lines in texts.items():
        paths[name] = folder / f"{name}.txt"
        paths[name].write_text("".join(lines))
    return paths


def _plain_on_one_core(files: dict, minutes: float) -> dict:
    torch.set_num_threads(1)
    splits = {name: TokenFile(folder).parts[part].tokens for name, (folder, part) in files.items()}
    return train_plain(splits, len(TokenFile(files["train"][0]).vocab), 60 * minutes, cache=False)


def token_files(train: Path, test: Path) -> dict:
    """``{split: (token file, part)}`` as ``rnnkit train --test-data`` prepares them (cached, so the
    run finds the same files)."""
    main = prepare(train, level="word", split=(("train", 0.9), ("validation", 0.1)), progress=False)
    other = prepare(test, level="word", split=(("test", 1.0),), vocab=main.vocab, progress=False)
    return {"train": (str(main.path), "train"), "validation": (str(main.path), "validation"),
            "test": (str(other.path), "test")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=8.0, help="wall budget of each run (default 8)")
    parser.add_argument("--out", default="runs/word-lm-scaling", help="texts and run directories go here")
    args = parser.parse_args(argv)
    out = Path(args.out)
    texts = build_texts(out / "texts")
    results = {"minutes": args.minutes, "threads per run": 1, "test text": "second half of ptb.valid.txt"}
    context = multiprocessing.get_context("spawn")
    for size in SIZES:
        files = token_files(texts[size], texts["test"])
        with context.Pool(2) as pool:
            rnnkit_job = pool.apply_async(rnnkit_on_one_core, (str(out / size), args.minutes,
                                                               ["--no-neural-cache", "--snapshots", "1"]),
                                          {"data": texts[size], "test": texts["test"]})
            plain_job = pool.apply_async(_plain_on_one_core, (files, args.minutes))
            run, plain = rnnkit_job.get(), plain_job.get()
        plain.pop("with cache")
        if {k: list(v[:2]) for k, v in run["files"].items()} != {k: list(v) for k, v in files.items()}:
            raise SystemExit(f"size {size}: rnnkit's run read other token files than the plain script")
        model, _, _ = load_language_model(out / size)
        rnnkit = {"parameters": sum(p.numel() for p in model.parameters()),
                  **{key: run[key] for key in ("validation_loss", "test_loss", "test_perplexity", "tokens",
                                               "tokens_per_second")}}
        results[size] = {"training tokens": len(TokenFile(files["train"][0]).parts["train"].tokens),
                         "rnnkit default": rnnkit, "plain": plain,
                         "ratio": rnnkit["test_perplexity"] / plain["test_perplexity"]}
        print(f"{size}: rnnkit {rnnkit['test_perplexity']:.1f}, plain {plain['test_perplexity']:.1f}, "
              f"ratio {results[size]['ratio']:.3f}", flush=True)
    print(f"\nword-level test perplexity on the second half of ptb.valid.txt, {args.minutes:g} minutes each, "
          f"one core each")
    print(f"{'training text':>14} {'train tokens':>13} {'plain':>8} {'rnnkit':>8} {'ratio':>7}")
    for size in SIZES:
        r = results[size]
        print(f"{size:>14} {r['training tokens']:13,} {r['plain']['test_perplexity']:8.1f} "
              f"{r['rnnkit default']['test_perplexity']:8.1f} {r['ratio']:7.3f}")
    path = write_results("word_lm_scaling", results)
    print(f"results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
