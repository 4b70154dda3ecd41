"""RecallEvaluator: exact Recall@K of face embeddings, overall and per group (core in `recall`)."""
