"""`streamdetect demo`: calibrate, attack, start a worker, submit uploads, show what arrives."""
