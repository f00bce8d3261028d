"""Tasks: prompts, targets and scoring (reward, correctness, vote key)."""
