"""Evaluation on the paper's spatial benchmarks: `python -m nemo_spatial.eval` (see README, "Evaluation").

benchmarks.py (the registry), loading.py (rows -> samples), prompts.py (templates, images), scoring.py (strict
and upstream extraction), metrics.py (accuracy, Wilson CI, standard metrics), backends/ (vllm, hf, openai,
anthropic), runner.py (limit, resume, chunks), report.py (samples.jsonl, results.json, report.md/png),
paper.py (the paper's numbers), model_ref.py (--model), synth.py (fixture datasets in each real schema).
"""
