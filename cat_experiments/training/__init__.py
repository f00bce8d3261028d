"""Trainers: TRL's SFTTrainer and GRPOTrainer with the CAT weight applied (training/sft.py, training/rl.py)."""
