"""Fine-tuning the embedding model on what the deployment already has: training pairs from the corpus's structure
and the feedback loop's good answers, a challenger trained from the serving model, and a side-by-side evaluation
that decides whether it is promoted."""
