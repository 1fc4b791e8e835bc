"""Language models: token-level distillation of a causal LM (`task: lm` configs, `distill demo --task lm`).

data.py     text and prompt/completion JSONL as token sequences; the char tokenizer
models.py   our GPT or a Hugging Face causal LM; the vocabulary check
modules.py  what a stage trains: NextToken (cross-entropy) and TokenDistiller
config.py   the `task: lm` config
run.py      the run: stages, perplexity, speed, the diagnosis
"""
