"""Training the mini models from one seed: the captioner, the generator and the encoders
(``rebuild`` runs them all; ``common`` holds what they share)."""
