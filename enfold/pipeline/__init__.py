"""The training wing: the pretrain and finetune stages, the training core they share
(trainer.py: steps, checkpoints, resumption, snapshots), their held-out evaluations (restoration
PSNR and picture grids, classification, kNN), distributed setup, run locks and progress logs.

It stands on the ground floor (model, data, corrupt, config, checkpoint) beside the deployment
wing (artifact, export, runtime, zoo); neither wing imports the other (tests/test_layers.py).
"""
