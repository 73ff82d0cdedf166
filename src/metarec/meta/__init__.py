"""Meta-learning: the scorer (pure functions), few-shot tasks, and the algorithms that train it."""
