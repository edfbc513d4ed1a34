"""Training data and decisions that need no database: clip windows around operation
boundaries, examples with their frames, the dataset, scoring and the promotion gate."""
