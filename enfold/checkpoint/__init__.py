"""Checkpoints, the ground floor both wings stand on: ``store`` writes and reads the files
(atomically, weights only), ``load`` turns one into its model. Training writes them; export and
the runtime read them, through here and never through the training wing."""
