"""The SLURM launcher: recipe + cluster file -> one sbatch script placing trainer, vLLM servers, reward service.

`python launcher/submit.py --recipe conf/recipes/X.yaml --cluster conf/cluster/Y.yaml [key=value ...]`.
config.py: the recipe's `launch:` section (placement, preemption); cluster.py: conf/cluster/*.yaml;
plan.py: which node and GPUs each component gets; render.py: the script; submit.py: the command line.
Nothing here imports Megatron or vLLM: a login node needs only the config machinery.
"""
